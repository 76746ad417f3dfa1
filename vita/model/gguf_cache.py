"""A GGUF checkpoint as a plain HF folder, converted once and reused.

transformers dequantises a GGUF file on every load and parses its metadata (the tokenizer's 49k-entry
vocab among it) in Python, which costs tens of seconds per run for SmolLM2-135M. :func:`hf_folder`
does that once: the fp32 weights (safetensors) and the tokenizer are written to
``~/.cache/vita/gguf/<key>`` (``$VITA_GGUF_CACHE``), keyed by the file's path, size and mtime, and
every later load reads that folder. The tensors are the ones the direct GGUF load gives.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

DONE = "vita_gguf.json"


def cache_dir() -> Path:
    return Path(os.environ.get("VITA_GGUF_CACHE") or Path.home() / ".cache" / "vita" / "gguf")


def hf_folder(pretrained: str, gguf_file: str) -> Path:
    """The folder holding ``pretrained/gguf_file`` as ``model.safetensors`` + config + tokenizer files."""
    import json

    src = Path(pretrained) / gguf_file
    st = src.stat()
    key = hashlib.sha1(f"{src.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    out = cache_dir() / f"{src.stem}-{key}"
    if (out / DONE).is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vita.model.backbones import forget_gguf_quantization

    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    lm = AutoModelForCausalLM.from_pretrained(pretrained, gguf_file=gguf_file, dtype=torch.float32)
    forget_gguf_quantization(lm)
    lm.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(pretrained, gguf_file=gguf_file).save_pretrained(tmp)
    (tmp / DONE).write_text(json.dumps({"source": str(src.resolve()), "size": st.st_size}))
    try:
        tmp.rename(out)  # atomic; another process may have finished first
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / DONE).is_file():
            raise
    return out


def tokenizer_path(model_cfg) -> str | None:
    """Where ``cfg.model``'s tokenizer loads from: ``model.tokenizer``, else the cached folder of a GGUF
    ``model.pretrained`` + ``model.gguf_file``, else ``model.pretrained``."""
    if model_cfg.tokenizer:
        return str(model_cfg.tokenizer)
    if model_cfg.get("gguf_file") and model_cfg.pretrained:
        return str(hf_folder(model_cfg.pretrained, model_cfg.gguf_file))
    return model_cfg.pretrained
