"""Import a VITA whole-model folder (or one of VITA's stage outputs) into vita.

* :func:`load_vita` — a ready ``(model, tokenizer, model config)`` from a VITA folder, for
  ``vita.chat`` / evaluation / conversion;
* :func:`adopt_vita_config` + :func:`build_vita_model` — what ``stage.init_from=vita:PATH`` does
  in ``vita.run``: the run's ``cfg.model`` becomes the folder's, and the model is built on the
  meta device and filled from the shards one tensor at a time;
* :func:`load_group_file` — VITA's ``mm_projector.bin`` / ``audio_adpter.bin`` into one group.

Memory: parameters are created on the meta device; each tensor is read into its own buffer
and handed to the model (renamed tensors without a copy), so a process holds one model, not
two. Under ZeRO-3 (:func:`zero3_build_config`) the model is built in its partitions instead
(``deepspeed.zero.Init`` with the run's DeepSpeed config) and each tensor is streamed into its
partitions, so a rank holds its part of the model plus the tensor in flight, never the whole.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from vita.artefacts import has_llm_weights, hf_model_type, is_hf
from vita.errors import CheckpointError
from vita.interop.config_map import FAMILIES, Imported, model_config_from_vita, read_config
from vita.interop.keys import plan_keys
from vita.interop.loader import check_complete, check_fit, stream_into
from vita.interop.meta import owners, params_on_meta
from vita.interop.shards import WeightFiles, list_bin, list_weights, read_header
from vita.model.builder import build_for, torch_dtype
from vita.model.init_from import register_init_source

log = logging.getLogger("vita")
PREFIX = "vita:"
GROUP_FILES = {"mm_projector": "vision_projector", "audio_adpter": "audio_projector"}
KEEP_USER = ("attn_implementation", "state_loss_weight", "state_class_weights")


@dataclass
class VitaModel:
    """What :func:`load_vita` returns."""

    model: Any
    """The :class:`~vita.model.omni.OmniModel`, in eval mode, media token ids set."""
    tokenizer: Any
    """The folder's tokenizer (with vita's placeholder tokens added if it lacked them)."""
    imported: Imported
    """The composed model config (``imported.model`` is ``cfg.model``) and the fields vita did not honour."""

    @property
    def template(self) -> str:
        """vita's chat template for this VITA model (``qwen2.5`` for VITA-1.5, ``mixtral`` for VITA-1.0)."""
        return FAMILIES[self.imported.family].template


def vita_path(init_from: str | None) -> Path | None:
    """``vita:PATH`` -> PATH; anything else -> None."""
    if init_from and str(init_from).startswith(PREFIX):
        return Path(str(init_from)[len(PREFIX):]).expanduser()
    return None


def is_vita_folder(path: str | Path) -> bool:
    """True for a VITA whole-model folder: ``config.json`` with a VITA ``model_type`` (what ``vita.chat``
    can test before calling :func:`load_vita`)."""
    return hf_model_type(Path(path)) in FAMILIES


def is_whole_model(path: Path) -> bool:
    """A VITA whole-model folder (``config.json`` + weights), as opposed to a stage output file."""
    return path.is_dir() and is_hf(path) and not _group_files(path)


def _group_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if has_llm_weights(path):
        return []
    return [path / f"{stem}{ext}" for stem in GROUP_FILES for ext in (".bin", ".safetensors")
            if (path / f"{stem}{ext}").is_file()]


def read_vita_folder(folder: Path, allow_bin: bool) -> tuple[dict, WeightFiles]:
    if not folder.exists():
        raise CheckpointError(f"{folder}: no such VITA folder")
    config = read_config(folder)
    return config, list_weights(folder, allow_bin=allow_bin)


def compose_from_vita(folder: str | Path, allow_bin: bool = False, **overrides: Any) -> tuple[Imported, WeightFiles]:
    """The folder's model config (``Imported``) and its tensor list, reading headers only.

    Args:
        overrides: ``cfg.model`` keys to change, dotted (``{"vision.overrides.num_attention_heads": 16}``)
            or plain (``attn_implementation="eager"``).
    """
    folder = Path(folder)
    config, wf = read_vita_folder(folder, allow_bin)
    imported = model_config_from_vita(folder, wf, config)
    for k, v in overrides.items():
        OmegaConf.update(imported.model, k, v, merge=True)
    return imported, wf


def build_vita_model(model_cfg: DictConfig, folder: str | Path, vocab_size: int | None = None,
                     dtype: str | torch.dtype | None = "auto", allow_bin: bool = False, progress: bool = True,
                     wf: WeightFiles | None = None, ds_config: dict | None = None):
    """Build ``model_cfg``'s OmniModel on the meta device and fill it from the VITA folder's shards.

    Every tensor of the folder is used exactly once and every model tensor gets one; otherwise a
    :class:`CheckpointError` lists the missing, unexpected and mis-shaped keys with their files
    (checked from the headers, before any data is read).

    Args:
        ds_config: a ZeRO-3 DeepSpeed config (:func:`zero3_build_config`): build the model in its
            partitions and stream each tensor into them (every rank calls this together).
    """
    from vita.model import build_model

    folder = Path(folder)
    if wf is None:
        _, wf = read_vita_folder(folder, allow_bin)
    with params_on_meta():
        model = build_model(model_cfg, vocab_size=vocab_size)
    plan = plan_keys(model)
    check_fit(plan, wf, what=str(folder))
    if ds_config is not None:
        return _build_partitioned(model_cfg, folder, wf, plan, model, vocab_size, progress, ds_config)
    n = stream_into(model, plan, wf, dtype=torch_dtype(dtype), progress=progress)
    check_complete(model, str(folder))
    log.info("loaded %s parameters from %s (%d files)", f"{n:,}", folder, len(wf.files))
    return model


def _build_partitioned(model_cfg, folder: Path, wf: WeightFiles, plan, meta_model, vocab_size, progress: bool,
                       ds_config: dict):
    """The ZeRO-3 half of :func:`build_vita_model`: the model built in partitions, in the DeepSpeed config's
    dtype, then filled tensor by tensor. The meta build before it checked the key table, drew from the RNG
    what the meta path draws, and lends its buffers (built as the meta path builds them, in their own dtype)."""
    import torch.distributed as dist

    from vita.engine.partitioned import config_dtype, held_elements, partitioned_build
    from vita.interop.loader import GatherLog
    from vita.interop.meta import materialise
    from vita.model import build_model

    dtype = config_dtype(ds_config)
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), partitioned_build(ds_config):
        model = build_model(model_cfg, vocab_size=vocab_size)  # the RNG state after: the meta path's
        if model.llm.config.get_text_config().tie_word_embeddings:
            model.llm.tie_weights()  # (skipped with the weight init)
    hold, meta_hold = owners(model), owners(meta_model)
    if set(hold) != set(meta_hold):
        raise RuntimeError(f"the ZeRO-3 build of {folder} has other tensors than its meta build: "
                           f"{sorted(set(hold) ^ set(meta_hold))[:6]}")
    for name, holders in hold.items():
        mod, attr, is_param = meta_hold[name][0]
        if not is_param:
            materialise(holders, mod._buffers[attr])
    del meta_model, meta_hold
    counter = GatherLog()
    n = stream_into(model, plan, wf, dtype=dtype, progress=progress, partitioned=counter)
    held, total, full = held_elements(model)
    expected = sum(1 for _ in model.parameters())
    if counter.params != expected or full:
        raise RuntimeError(f"ZeRO-3 import of {folder}: {counter.params} of {expected} parameters filled in "
                           f"partitions, {full} left whole")
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    log.info("loaded %s parameters from %s (%d files) into ZeRO-3 partitions: rank %d holds %s of %s parameter "
             "elements (%.1f%%); %d parameters filled one at a time (%d through GatheredParameters), the largest "
             "%s elements; peak RSS %.2f GiB", f"{n:,}", folder, len(wf.files), dist.get_rank(), f"{held:,}",
             f"{total:,}", 100 * held / max(total, 1), counter.params, counter.gathered, f"{counter.largest:,}", rss)
    return model


def zero3_build_config(cfg: DictConfig, wf_folder: Path, tokenizer, world_size: int) -> dict | None:
    """The DeepSpeed config to build a ``stage.init_from=vita:PATH`` model in ZeRO-3 partitions, or None.

    None (the whole model loaded on every rank, partitioned later by ``deepspeed.initialize``) when
    the engine is not ZeRO-3, with ``stage.init_partitioned=false``, or when the tokenizer lacks vita's media tokens and adding them would
    grow the embedding table (a partitioned table is not resized; a log line says so).
    """
    from vita.engine.ds_config import build_ds_config
    from vita.model.tokens import MEDIA_TOKENS

    if cfg.engine.zero_stage != 3:
        return None
    if not cfg.stage.get("init_partitioned", True):
        log.info("stage.init_partitioned=false: every rank loads the whole model, deepspeed.initialize partitions it")
        return None
    if cfg.model.vision.tower is not None or cfg.model.audio.encoder is not None:
        _, wf = read_vita_folder(wf_folder, bool(cfg.stage.get("init_allow_bin", False)))
        emb = wf.tensors.get("model.embed_tokens.weight")
        grown = len(tokenizer) + sum(t not in tokenizer.get_vocab() for t in MEDIA_TOKENS)
        if emb is not None and grown > emb.shape[0]:
            log.info("stage.init_from=%s%s: the tokenizer lacks vita's media tokens and the embeddings must grow "
                     "to %d rows; a ZeRO-3 partitioned table is not resized, so every rank loads the whole model "
                     "before deepspeed.initialize partitions it", PREFIX, wf_folder, grown)
            return None
    return build_ds_config(cfg.engine, cfg.optim, world_size)


def load_vita(path: str | Path, dtype: str | torch.dtype | None = "auto", allow_bin: bool = False,
              progress: bool = True, **overrides: Any) -> VitaModel:
    """A ready model and tokenizer from a VITA whole-model folder (VITA-1.5, its FO variant, VITA-1.0).

    Args:
        path: the folder (``config.json``, ``model.safetensors.index.json`` + shards, tokenizer files).
        dtype: ``auto`` keeps the stored dtype; or ``float32`` / ``bfloat16`` / a torch dtype.
        allow_bin: accept ``pytorch_model*.bin`` weights (read with ``torch.load(weights_only=True)``).
        overrides: ``cfg.model`` keys to change (see :func:`compose_from_vita`).

    Example::

        vm = load_vita("/ckpt/VITA-1.5/VITA1.5_ckpt", dtype="bfloat16")
        out = vm.model.generate(...)
    """
    folder = Path(path)
    imported, wf = compose_from_vita(folder, allow_bin=allow_bin, **overrides)
    log.info("%s", imported.summary())
    built = build_for(imported.model, read_tokenizer(folder), build=build_vita_model, folder=folder, dtype=dtype,
                      progress=progress, wf=wf)
    return VitaModel(built.model.eval(), built.tokenizer, imported)


def read_tokenizer(folder: Path):
    """The folder's tokenizer (transformers' note that ``vita-Qwen2`` is not its model type is silenced)."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder}: no readable tokenizer files ({e}); VITA folders ship tokenizer.json / "
                              "tokenizer_config.json") from None
    finally:
        hf_logging.set_verbosity(level)


def adopt_vita_config(cfg: DictConfig, folder: Path) -> Imported:
    """``stage.init_from=vita:PATH``: make ``cfg.model`` the folder's model (entry + shapes) and
    ``data.image_aspect_ratio`` VITA's; keeps the user's ``attn_implementation`` and state-loss weights."""
    allow_bin = bool(cfg.stage.get("init_allow_bin", False))
    imported, _ = compose_from_vita(folder, allow_bin=allow_bin)
    new = imported.model
    for k in KEEP_USER:
        new[k] = cfg.model[k]
    with open_dict(cfg):
        cfg.model = new
        if "image_aspect_ratio" in imported.data_overrides:
            cfg.data.image_aspect_ratio = imported.data_overrides["image_aspect_ratio"]
    if "max_length" in imported.data_overrides and imported.data_overrides["max_length"] != cfg.data.max_length:
        log.info("VITA trained %s with tokenizer_model_max_length=%d; this run uses data.max_length=%d",
                 folder, imported.data_overrides["max_length"], cfg.data.max_length)
    log.info("stage.init_from=%s%s: %s", PREFIX, folder, imported.summary())
    return imported


def init_from_vita(model, src: Path, allow_bin: bool = False) -> list[str]:
    """``stage.init_from=vita:PATH`` into an already built model (``vita.run`` builds a whole model from the folder
    instead): a whole-model folder fills every group, a stage output its own one; returns the groups loaded."""
    if is_whole_model(src):
        _, wf = read_vita_folder(src, allow_bin)
        plan = plan_keys(model)
        check_fit(plan, wf, what=str(src))
        stream_into(model, plan, wf, progress=False)
        return list(model.module_groups())
    return load_group_file(model, src, allow_bin=allow_bin)


register_init_source(PREFIX, init_from_vita)


def load_group_file(model, path: str | Path, allow_bin: bool = False) -> list[str]:
    """Load VITA's ``mm_projector.bin`` / ``audio_adpter.bin`` (or a folder holding them) into their groups.

    Keys may carry VITA's full prefix (``model.mm_projector.0.weight``) or not (``mm_projector.0.weight``,
    ``0.weight``); the group's tensors must all be there, with the right shapes.
    """
    path = Path(path)
    files = _group_files(path)
    if not files:
        raise CheckpointError(f"stage.init_from={PREFIX}{path}: neither a VITA whole-model folder (config.json + "
                              "shards) nor mm_projector.bin / audio_adpter.bin")
    plan = plan_keys(model)
    loaded = []
    for f in files:
        group = GROUP_FILES.get(f.stem)
        if group is None:
            raise CheckpointError(f"{f}: vita knows VITA's stage outputs mm_projector.bin (vision projector) and "
                                  "audio_adpter.bin (audio adapter); for others use model.*.projector_pretrained")
        if group not in model.module_groups():
            raise CheckpointError(f"{f} is a {group} but this model has none (model.vision.tower / model.audio.encoder)")
        prefix = "model.mm_projector." if group == "vision_projector" else "model.audio_encoder.adpter."
        wf = list_bin([f], allow_bin) if f.suffix != ".safetensors" else WeightFiles(f.parent, read_header(f), [f])
        renamed = {}
        for k, info in wf.tensors.items():
            canon = k if k.startswith(prefix) else prefix + k.split(prefix.removeprefix("model."), 1)[-1]
            renamed[canon] = type(info)(info.file, info.shape, info.dtype, info.offsets, k)
        wf.tensors = renamed
        names = {k for k in plan.vita15_shapes if k.startswith(prefix)}
        stray = sorted(set(wf.tensors) - names)
        if stray:
            raise CheckpointError(f"{f}: tensors that are not the {group}'s: {', '.join(stray[:6])} "
                                  f"(expected {', '.join(sorted(names))})")
        check_fit(plan, wf, only=names, what=str(f))
        stream_into(model, plan, wf, only=names, progress=False)
        loaded.append(group)
    return loaded
