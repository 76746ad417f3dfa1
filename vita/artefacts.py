"""What vita writes and reads on disk: the file names and layouts, and :func:`detect` -> the kind of a path.

Every other module asks this one (no other module spells these names)::

    <run dir>/
      vita_config.json          the run's resolved config (CONFIG_FILE)
      COMPLETE.json             written when the run finished (COMPLETE_FILE)
      checkpoints/              step_XXXXXXXX/ (DeepSpeed files, MANIFEST.json last), latest, best, best.json
      final/                    the export: vita_export.json, the HF LLM (model*.safetensors), <group>.safetensors,
                                adapters/<group>/, the tokenizer; a speaking model (stage 3.2) adds
                                speech_decoder.safetensors + speech_decoder.json (its registry key and shape) and
                                speech_codec/ (the codec's own folder, ``codec.save``) or speech_codec.json (the
                                key and options of a codec without a folder: codec2, a hub id ...)
      speech_codec/             the run's codec (the same, once per run: checkpoints carry the decoder's weights)

Kinds (:data:`KINDS`): ``run``, ``export``, ``checkpoint``, ``vita`` (a released VITA whole-model folder: a
``config.json`` whose ``model_type`` is VITA's), ``hf`` (a Hugging Face model folder), or None.
"""

from __future__ import annotations

import json
from pathlib import Path

from vita.errors import CheckpointError

CONFIG_FILE = "vita_config.json"
COMPLETE_FILE = "COMPLETE.json"
CHECKPOINTS = "checkpoints"
FINAL = "final"
EXPORT_META = "vita_export.json"
LLM_WEIGHTS = "model*.safetensors"
LLM_BIN_WEIGHTS = "pytorch_model*.bin"
HF_CONFIG = "config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
MANIFEST = "MANIFEST.json"
ZERO0_STATES = "mp_rank_00_model_states.pt"
BEST = "best"
BEST_FILE = "best.json"
VITA_MODEL_TYPE_PREFIX = "vita-"
KINDS = ("run", "export", "checkpoint", "vita", "hf")
SPEECH_DECODER = "speech_decoder"
SPEECH_DECODER_WEIGHTS = "speech_decoder.safetensors"
SPEECH_DECODER_CONFIG = "speech_decoder.json"
SPEECH_CODEC_DIR = "speech_codec"
SPEECH_CODEC_CONFIG = "speech_codec.json"


def checkpoints_of(run_dir: Path) -> Path:
    """``<run dir>/checkpoints``."""
    return Path(run_dir) / CHECKPOINTS


def final_of(run_dir: Path) -> Path:
    """``<run dir>/final``: the run's export."""
    return Path(run_dir) / FINAL


def is_run(path: Path | None) -> bool:
    return path is not None and (Path(path) / CONFIG_FILE).is_file()


def is_export(path: Path | None) -> bool:
    return path is not None and (Path(path) / EXPORT_META).is_file()


def is_checkpoint(path: Path | None) -> bool:
    """A DeepSpeed checkpoint folder vita wrote (``MANIFEST.json``) or a ZeRO-0 one (its model states file)."""
    return path is not None and ((Path(path) / MANIFEST).is_file() or (Path(path) / ZERO0_STATES).is_file())


def is_hf(path: Path | None) -> bool:
    return path is not None and (Path(path) / HF_CONFIG).is_file()


def hf_model_type(path: Path) -> str | None:
    """``model_type`` of ``path/config.json`` (None when absent or unreadable)."""
    f = Path(path) / HF_CONFIG
    try:
        return json.loads(f.read_text()).get("model_type") if f.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None


def is_vita(path: Path | None) -> bool:
    """A released VITA whole-model folder: ``config.json`` with a VITA ``model_type`` (``vita-Qwen2`` ...)."""
    return path is not None and str(hf_model_type(path) or "").startswith(VITA_MODEL_TYPE_PREFIX)


def detect(path: str | Path | None) -> str | None:
    """The kind of ``path`` (:data:`KINDS`), tried in that order; None for anything else."""
    if path is None:
        return None
    p = Path(path)
    for kind, test in (("run", is_run), ("export", is_export), ("checkpoint", is_checkpoint), ("vita", is_vita),
                       ("hf", is_hf)):
        if test(p):
            return kind
    return None


def llm_weight_files(folder: Path) -> list[Path]:
    """The HF LLM's safetensors files in ``folder`` (an export or HF folder), sorted."""
    return sorted(Path(folder).glob(LLM_WEIGHTS))


def has_llm_weights(folder: Path, allow_bin: bool = True) -> bool:
    """Whether ``folder`` holds whole-LLM weights (safetensors, or ``pytorch_model*.bin`` with ``allow_bin``)."""
    return bool(llm_weight_files(folder)) or (allow_bin and any(Path(folder).glob(LLM_BIN_WEIGHTS)))


def read_export_meta(folder: Path) -> dict:
    """An export's ``vita_export.json``; a folder without one is a :class:`CheckpointError` saying what to pass."""
    f = Path(folder) / EXPORT_META
    if not f.is_file():
        raise CheckpointError(f"{folder} is not a vita export (no {EXPORT_META}); pass <run dir>/{FINAL}")
    return json.loads(f.read_text())


def write_export_meta(folder: Path, meta: dict) -> None:
    (Path(folder) / EXPORT_META).write_text(json.dumps(meta, indent=1))


def find_export(src: Path) -> Path:
    """A run dir (has ``final/``) or an export folder -> the export folder."""
    for cand in (Path(src), final_of(src)):
        if is_export(cand):
            return cand
    raise CheckpointError(f"{src}: neither a vita export ({EXPORT_META}) nor a run dir with {FINAL}/")


def read_run_config(run_dir: Path) -> dict:
    """A run dir's saved (resolved) config."""
    return json.loads((Path(run_dir) / CONFIG_FILE).read_text())


def read_best(ckpt_root: Path) -> dict | None:
    """``checkpoints/best.json`` (``tag``, ``metric``, ``value``, ``step``), or None."""
    f = Path(ckpt_root) / BEST_FILE
    return json.loads(f.read_text()) if f.is_file() else None


def speech_decoder_weights(path: str | Path) -> Path:
    """``model.speech.decoder_pretrained`` -> the weights file: the path itself, or a folder's (an export's)
    speech decoder safetensors."""
    p = Path(path)
    if p.is_dir():
        if not (p / SPEECH_DECODER_WEIGHTS).is_file():
            raise CheckpointError(f"model.speech.decoder_pretrained={p}: the folder has no {SPEECH_DECODER_WEIGHTS} "
                                  "(pass a stage 3.2 export, <run dir>/final, or the weights file)")
        return p / SPEECH_DECODER_WEIGHTS
    return p


def write_speech(folder: Path, decoder_config: dict, codec, codec_settings: dict) -> None:
    """Write a speaking model's decoder config and its codec: ``speech_codec.json`` (``codec``, ``codec_path``,
    ``codec_options``, as ``cfg.model.speech`` spells them) and, for a codec that saves itself (``codec.save``),
    its folder, which the JSON then names instead of the original path."""
    folder = Path(folder)
    (folder / SPEECH_DECODER_CONFIG).write_text(json.dumps(decoder_config, indent=1))
    if hasattr(codec, "save"):
        codec.save(folder / SPEECH_CODEC_DIR)
        codec_settings = {"codec": codec.name, "codec_path": SPEECH_CODEC_DIR, "codec_options": {}}
    (folder / SPEECH_CODEC_CONFIG).write_text(json.dumps(codec_settings, indent=1))


def read_speech(folder: Path) -> tuple[dict | None, dict | None]:
    """``(decoder config, codec settings)`` written by :func:`write_speech` (None each when absent); a codec
    folder inside ``folder`` is returned as its full path."""
    folder = Path(folder)
    dec, cod = folder / SPEECH_DECODER_CONFIG, folder / SPEECH_CODEC_CONFIG
    decoder = json.loads(dec.read_text()) if dec.is_file() else None
    codec = json.loads(cod.read_text()) if cod.is_file() else None
    if codec is not None and codec.get("codec_path") == SPEECH_CODEC_DIR:
        codec["codec_path"] = str(folder / SPEECH_CODEC_DIR)
    return decoder, codec
