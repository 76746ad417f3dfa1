"""A disk cache of the metadata index (lengths, modality flags, problems) of a mixture.

Indexing reads every record and every media header; for large mixtures that is worth doing
once. The key covers the annotation files (path, size, mtime), the mixture (refs), the media
roots and everything that changes token counts (template, max length, encoder spec, media
options, tokenizer, and a speaking model's codec with its folder's files). A speaking model's index also
holds the codes of every spoken answer (computed once, while indexing). Media files edited in place after indexing are not detected: run
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
    from vita.data.speech import codec_stamp

    spec = proc.spec.describe() if proc.spec is not None else None
    tok = proc.tokenizer
    h.update(json.dumps([repr(proc.template), proc.max_length, spec, asdict(proc.opts), proc.state_tokens,
                         proc.layout, getattr(tok, "name_or_path", ""), len(tok), proc.overlong, proc.max_images,
                        codec_stamp(proc.spec)],
                        default=str).encode())
    return h.hexdigest()[:24]


def load(key: str):
    """``(refs, lengths, multimodal, problems, truncated, speech)`` or ``None``."""
    from vita.data.dataset import Truncated

    path = cache_dir() / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        z = np.load(path, allow_pickle=False)
        problems = [BadSample(*p) for p in json.loads(str(z["problems"]))]
        truncated = [Truncated(*t) for t in json.loads(str(z["truncated"]))]
        speech: dict[int, list] = {}
        if "speech_pos" in z.files:
            ends = np.cumsum(z["speech_frames"])
            for pos, a, b in zip(z["speech_pos"].tolist(), (ends - z["speech_frames"]).tolist(), ends.tolist()):
                speech.setdefault(pos, []).append(z["speech_codes"][a:b])
        return z["refs"], z["lengths"], z["multimodal"], problems, truncated, speech
    except Exception:  # a damaged cache entry is rebuilt
        return None


def save(key: str, refs, lengths, multimodal, problems: list[BadSample], truncated: list | None = None,
         speech: dict | None = None) -> None:
    """Write atomically (several ranks may index at once); ``speech``: position -> codes of its spoken answers."""
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{key}.{os.getpid()}.npz"
    probs = json.dumps([[p.kind, p.where, p.sample_id, p.detail] for p in problems])
    trunc = json.dumps([[t.where, t.sample_id, t.length, t.lost_supervised] for t in truncated or []])
    extra = {}
    if speech:
        flat = [(pos, c) for pos, cs in sorted(speech.items()) for c in cs]
        extra = {"speech_pos": np.array([p for p, _ in flat], dtype=np.int64),
                 "speech_frames": np.array([c.shape[0] for _, c in flat], dtype=np.int64),
                 "speech_codes": np.concatenate([c for _, c in flat]).astype(np.int32)}
    np.savez(tmp, refs=refs, lengths=lengths, multimodal=multimodal, problems=np.array(probs), truncated=np.array(trunc),
             **extra)
    os.replace(tmp, d / f"{key}.npz")
