"""The shard format: WebDataset-compatible POSIX tar files plus one ``manifest.json`` beside them.

A sample is a group of consecutive tar members sharing a key (``000000042``):

- ``<key>.json``: ``{"record": <the VITA record as written>, "where": "file:line", "dataset": name,
  "length": tokens after truncation, "full_length", "multimodal", "modality", "counts": placeholder
  tokens per media item, "media": {"image": ["<key>.image0.jpg", ...], ...}}``;
- ``<key>.<modality><n>.<ext>``: each media file's bytes as they are on disk (no re-encoding);
- ``<key>.speech<n>.npy``: the codes ``[F, K]`` (int32) of the sample's n-th spoken answer, computed by the
  speaking model's codec when sharding (the ``.json`` lists them under ``"speech"``; the fingerprint holds the
  codec and its folder's files, so shards written without codes or by another codec are refused);
- or, for a video of a set written with ``--video-frames png|jpg|npy``, ``<key>.video<n>.frames.<ext>``: its
  frames as the training code samples and resizes them (:func:`vita.data.media.video_frames`), one image
  strip top to bottom or one uint8 ``[n, S, S, 3]`` array; the ``.json`` then holds ``"video_frames": ext``.

``manifest.json``: the shard list (name, samples, bytes, tokens, longest sample, modality counts), the
totals, the spec fingerprint (everything that changes token counts: template, max_length, tokenizer,
encoder spec, media options ...; it holds the frame sampling ``min_frames``, ``max_frames``, ``video_fps``
and the frame size, so stored frames are never read for other settings), ``video_frames``, the command
that wrote it and the vita version. Per-sample lengths stay in the shards, so
reading the manifest costs the same for any dataset size.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict

from vita.errors import DataError

MANIFEST = "manifest.json"
BAD_SAMPLES = "bad_samples.jsonl"
PROGRESS = ".shard-progress.json"
FORMAT_VERSION = 1
FRAMES_VERSION = 2
"""A set with stored video frames: a reader that knows only version 1 refuses it rather than failing per video."""
READ_VERSIONS = (FORMAT_VERSION, FRAMES_VERSION)


def shard_name(i: int) -> str:
    return f"shard-{i:06d}.tar"


def sample_key(i: int) -> str:
    return f"{i:09d}"


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def vocab_hash(tokenizer) -> str:
    """A hash of the tokenizer's vocabulary (token -> id), its special tokens included."""
    return _digest(sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]))


FIELD_KEYS = {
    # fingerprint field -> the config key that sets it (for the re-shard command)
    "template": "data.template", "system_prompt": "data.system_prompt", "max_length": "data.max_length",
    "overlong": "data.overlong", "max_images": "data.max_images", "state_tokens": "data.state_tokens",
    "vita_layout": "data.vita_layout", "min_tiles": "data.min_tiles", "max_tiles": "data.max_tiles",
    "use_thumbnail": "data.use_thumbnail", "image_aspect_ratio": "data.image_aspect_ratio",
    "min_frames": "data.min_frames", "max_frames": "data.max_frames", "video_fps": "data.video_fps",
    "dither": "data.dither",
}


def fingerprint(data_cfg, proc) -> dict:
    """Everything a shard's precomputed token counts (and speech codes) depend on, field by field (JSON-safe)."""
    from vita.data.speech import codec_stamp

    spec = proc.spec.describe() if proc.spec is not None else None
    speech = proc.spec.speech_codec if proc.spec is not None else None
    out = {"template": data_cfg.template, "template_text": _digest(repr(proc.template)),
           "system_prompt": data_cfg.system_prompt, "max_length": proc.max_length, "overlong": proc.overlong,
           "max_images": proc.max_images, "state_tokens": proc.state_tokens, "vita_layout": proc.layout,
           **asdict(proc.opts), "encoder_spec": _digest(spec), "spec": spec,
           "tokenizer": str(getattr(proc.tokenizer, "name_or_path", "")).rstrip("/").rsplit("/", 1)[-1],
           "vocab_size": len(proc.tokenizer), "vocab": vocab_hash(proc.tokenizer),
           "speech_codec": None if speech is None else repr(speech),
           "speech_codec_files": None if speech is None else _digest(codec_stamp(proc.spec))}
    return json.loads(json.dumps(out, default=str))


def changed_fields(saved: dict, now: dict) -> list[str]:
    """Names of the fingerprint fields that differ (``spec`` is reported through ``encoder_spec``)."""
    return [k for k in now if k != "spec" and saved.get(k) != now[k]]


def describe_change(saved: dict, now: dict, fields: list[str]) -> str:
    parts = []
    for k in fields:
        if k == "encoder_spec":
            a, b = saved.get("spec") or {}, now.get("spec") or {}
            sub = [f"{f} {a.get(f)!r} -> {b.get(f)!r}" for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f)]
            parts.append(f"encoder spec ({', '.join(sub) or 'none -> set'})")
        elif k in ("template_text", "vocab"):
            parts.append(f"{k} (hash {saved.get(k)} -> {now[k]})")
        else:
            parts.append(f"{k} {saved.get(k)!r} -> {now[k]!r}")
    return ", ".join(parts)


def reshard_command(manifest: dict, now: dict, fields: list[str], out: str) -> str:
    """The ``python -m vita.data.shard`` line that writes shards for the current settings."""
    args = [a for a in manifest.get("args", []) if not a.startswith("--out")]
    keys = {FIELD_KEYS[f] for f in fields if f in FIELD_KEYS}
    args = [a for a in args if a.split("=", 1)[0] not in keys]
    args += [f"{FIELD_KEYS[f]}={_override(now[f])}" for f in fields if f in FIELD_KEYS]
    if manifest.get("video_frames", "off") != "off":
        args.append(f"--video-frames {manifest['video_frames']}")
    extra = (" (with this run's model= overrides: the tokenizer or encoder spec changed)"
             if {"tokenizer", "vocab", "vocab_size", "encoder_spec"} & set(fields) else "")
    return f"python -m vita.data.shard {' '.join(args)} --out {out}{extra}"


def _override(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    return f"'{v}'" if isinstance(v, str) and (" " in v or not v) else str(v)


_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> ``a-000.tar a-001.tar a-002.tar``; ``{x,y}`` lists; several groups multiply."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    body = m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        a, b = rng.group(1), rng.group(2)
        width = len(a) if a.startswith("0") or len(a) == len(b) else 0
        step = 1 if int(b) >= int(a) else -1
        opts = [str(i).zfill(width) for i in range(int(a), int(b) + step, step)]
    elif "," in body:
        opts = body.split(",")
    else:
        raise DataError(f"shard pattern {pattern!r}: '{{{body}}}' is neither a range {{000..009}} nor a list {{a,b}}")
    head, tail = pattern[:m.start()], pattern[m.end():]
    return [x for o in opts for x in expand_braces(head + o + tail)]


def check_member_name(name: str, where: str) -> str:
    """A shard name from a manifest must be a plain file name beside it (no folders, no ``..``)."""
    if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise DataError(f"{where}: shard name {name!r} is not a plain file name beside the manifest; re-shard")
    return name
