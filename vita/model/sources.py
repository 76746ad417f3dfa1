"""Where a run's weights come from, resolved before anything is built.

Every weight reference of ``cfg.model`` (:data:`WEIGHT_KEYS`) is a local path or a Hugging Face hub
reference: ``org/name`` (a whole repo, e.g. ``Qwen/Qwen2.5-7B-Instruct``) or ``org/name/path/in/repo``
(a file or folder inside one, e.g. VITA-1.5's audio encoder
``VITA-MLLM/VITA-1.5/audio-encoder-Qwen2-7B-1107-weight-base-11wh-tunning/final.pt``; a file's whole
folder is fetched, as the encoder reads ``global_cmvn`` beside ``final.pt``). :func:`resolve_sources`
turns each into a local path (one hub call per repo, downloading unless ``HF_HUB_OFFLINE`` is set,
then only the local cache) and writes it back into the config; what cannot be reached raises one
:class:`~vita.errors.ConfigError` line naming the key, what was tried and how to point at a local folder.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vita.errors import ConfigError

log = logging.getLogger("vita")

WEIGHT_KEYS = ("model.pretrained", "model.tokenizer", "model.vision.pretrained", "model.vision.projector_pretrained",
               "model.audio.pretrained", "model.audio.projector_pretrained")
PREFIXES = ("ct2:",)  # a converter named before the path (model.audio.pretrained=ct2:<folder>)
HUB_REF = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/[^\s]+)?$")
PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]
"""What a whole-repo reference fetches: configs, safetensors weights, tokenizer files (no code, no pickles)."""


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _fetch(repo_id: str, sub: str) -> Path:
    """The local copy of ``repo_id`` (or of ``sub``'s folder in it): one ``snapshot_download`` call."""
    from huggingface_hub import snapshot_download

    if sub:
        folder = str(Path(sub).parent) if Path(sub).suffix else sub
        patterns = ["*"] if folder in ("", ".") else [f"{folder}/*"]
    else:
        patterns = PATTERNS
    local = snapshot_download(repo_id, allow_patterns=patterns, local_files_only=_offline())
    return Path(local) / sub if sub else Path(local)


def resolve(key: str, value: str) -> str:
    """One weight reference -> a local path (same prefix kept).

    Raises:
        ConfigError: neither a local path nor a reachable hub reference; the line says which key, what was
            tried and how to point the key at a local folder.
    """
    prefix = next((p for p in PREFIXES if value.startswith(p)), "")
    ref = value[len(prefix):]
    path = Path(ref).expanduser()
    if path.exists():
        return value
    if ref.startswith(("/", ".", "~")) or not HUB_REF.match(ref):
        raise ConfigError(f"{key}={value}: no such file or folder; point {key} at a local folder (or a hub id "
                          "such as org/name)")
    parts = ref.split("/")
    repo_id, sub = "/".join(parts[:2]), "/".join(parts[2:])
    where = f" ({sub} in it)" if sub else ""
    try:
        local = _fetch(repo_id, sub)
    except Exception as e:  # offline cache miss, no network, unknown repo, auth: all end here, once
        why = ("is not in the local Hugging Face cache and HF_HUB_OFFLINE is set" if _offline()
               else f"could not be fetched ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})")
        raise ConfigError(f"{key}={value}: not a local path, and the hub repo {repo_id}{where} {why}; download it "
                          f"where the hub is reachable (huggingface-cli download {repo_id} --local-dir DIR) and set "
                          f"{key}=DIR{'/' + sub if sub else ''}") from None
    if not local.exists():
        raise ConfigError(f"{key}={value}: the hub repo {repo_id} has no {sub}; point {key} at a local folder")
    log.info("%s=%s -> %s", key, value, local)
    return prefix + str(local)


def resolve_sources(cfg: DictConfig) -> None:
    """Resolve every :data:`WEIGHT_KEYS` entry of ``cfg`` in place (see the module doc); also stop at once
    when the stage must continue from an earlier one (``stage.init_required``) and ``stage.init_from`` is unset."""
    need = cfg.stage.get("init_required")
    if need and not cfg.stage.init_from:
        raise ConfigError(f"experiment {cfg.name} continues from {need}: set stage.init_from=<that run dir>/final "
                          "(or vita:<a VITA folder>)")
    for key in WEIGHT_KEYS:
        value = OmegaConf.select(cfg, key)
        if value:
            OmegaConf.update(cfg, key, resolve(key, str(value)))
