"""VITA-1.5 / VITA-1.0 whole-checkpoint interop: import a VITA folder, export back to VITA's layout.

Public API:

* :func:`load_vita` (path, dtype="auto", allow_bin=False, **overrides) -> :class:`VitaModel`
  (``.model``, ``.tokenizer``, ``.imported``: the composed ``cfg.model`` and what was not honoured);
* :func:`compose_from_vita` — the folder's ``cfg.model`` from config.json + headers (no weights read);
* :func:`export_vita` (src, out) — a vita export / run dir -> VITA's layout (LoRA merged);
* :func:`load_group_file` — VITA's ``mm_projector.bin`` / ``audio_adpter.bin`` into one group;
* :func:`is_vita_folder` — a folder with a VITA ``model_type`` (for ``vita.chat`` to pick :func:`load_vita`);
* :func:`vita_path`, :func:`adopt_vita_config`, :func:`build_vita_model` — ``stage.init_from=vita:PATH``.

Commands: ``python -m vita.interop.convert VITA_DIR --out DIR`` (VITA -> vita export) and
``python -m vita.export RUN --format vita`` (vita -> VITA).

Modules, one job each: :mod:`~vita.interop.keys` (name mapping), :mod:`~vita.interop.config_map`
(config.json mapping), :mod:`~vita.interop.shards` (reading index + shards), :mod:`~vita.interop.loader`
(streaming into a model), :mod:`~vita.interop.meta` (meta-device build), :mod:`~vita.interop.writer`
(sharded writing), :mod:`~vita.interop.importer`, :mod:`~vita.interop.exporter`.
"""

from vita.interop.exporter import export_vita
from vita.interop.importer import (
    VitaModel,
    adopt_vita_config,
    build_vita_model,
    compose_from_vita,
    is_vita_folder,
    is_whole_model,
    load_group_file,
    load_vita,
    vita_path,
)
from vita.interop.keys import plan_keys

__all__ = ["VitaModel", "load_vita", "compose_from_vita", "export_vita", "load_group_file", "vita_path",
           "is_vita_folder", "is_whole_model", "adopt_vita_config", "build_vita_model", "plan_keys"]
