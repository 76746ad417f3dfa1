"""A disk cache of the metadata index (lengths, modality flags, problems) of a mixture.

Indexing reads every record and every media header; for large mixtures that is worth doing
once. The key covers the annotation files (path, size, mtime), the mixture (refs), the media
roots and everything that changes token counts (template, max length, encoder spec, media
options, tokenizer). Media files edited in place after indexing are not detected: run
``python -m vita.check`` (which always decodes) or delete ``~/.cache/vita/index``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from vita.data.schema import BadSample


def cache_dir() -> Path:
    return Path(os.environ.get("VITA_INDEX_CACHE") or Path.home() / ".cache" / "vita" / "index")


def cache_key(source, proc) -> str | None:
    """A hash of everything the index depends on; ``None`` for sources that are not files."""
    files = getattr(source, "files", None)
    if not files:
        return None
    h = hashlib.sha256()
    for f, (roots, name) in zip(files, source.meta):
        st = f.path.stat()
        h.update(json.dumps([str(f.path.resolve()), st.st_size, st.st_mtime_ns, name,
                             {k: str(v) for k, v in roots.items()}]).encode())
    h.update(np.ascontiguousarray(source.refs).tobytes())
    spec = proc.spec.describe() if proc.spec is not None else None
    tok = proc.tokenizer
    h.update(json.dumps([repr(proc.template), proc.max_length, spec, asdict(proc.opts), proc.state_tokens,
                         proc.layout, getattr(tok, "name_or_path", ""), len(tok), proc.overlong, proc.max_images],
                        default=str).encode())
    return h.hexdigest()[:24]


def load(key: str):
    """``(refs, lengths, multimodal, problems, truncated)`` or ``None``."""
    from vita.data.dataset import Truncated

    path = cache_dir() / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        z = np.load(path, allow_pickle=False)
        problems = [BadSample(*p) for p in json.loads(str(z["problems"]))]
        truncated = [Truncated(*t) for t in json.loads(str(z["truncated"]))]
        return z["refs"], z["lengths"], z["multimodal"], problems, truncated
    except Exception:  # a damaged cache entry is rebuilt
        return None


def save(key: str, refs, lengths, multimodal, problems: list[BadSample], truncated: list | None = None) -> None:
    """Write atomically (several ranks may index at once)."""
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{key}.{os.getpid()}.npz"
    probs = json.dumps([[p.kind, p.where, p.sample_id, p.detail] for p in problems])
    trunc = json.dumps([[t.where, t.sample_id, t.length, t.lost_supervised] for t in truncated or []])
    np.savez(tmp, refs=refs, lengths=lengths, multimodal=multimodal, problems=np.array(probs), truncated=np.array(trunc))
    os.replace(tmp, d / f"{key}.npz")
