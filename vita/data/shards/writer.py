"""A VITA mixture -> tar shards + manifest (``python -m vita.data.shard``).

The samples are validated and measured by the training code (:func:`vita.data.dataset.index` with
the run's :class:`~vita.data.dataset.Processor`), bad ones left out and listed in
``bad_samples.jsonl`` as ``vita.check`` reports them, and written in the mixture's order (after its
ratios and ``data.mixture_seed`` shuffle). Each shard is written under a temporary name and renamed
when complete; ``.shard-progress.json`` records the finished ones, so a stopped run continues after
the last finished shard (the partial one is rewritten). The manifest is written last.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vita.data.schema import BadSample
from vita.data.shards import format as fmt
from vita.errors import DataError

log = logging.getLogger(__name__)

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """``1GB`` (10^9), ``200MB``, ``512KiB``, ``123456`` -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise DataError(f"--shard-size {text!r}: write a size such as 1GB, 200MB or 512KiB")
    return max(1, int(float(m.group(1)) * _UNITS[m.group(2).lower()]))


def _tar_size(n: int) -> int:
    return 512 + (n + 511) // 512 * 512


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


@dataclass
class _Open:
    """The shard being written."""

    name: str
    first: int
    tar: tarfile.TarFile
    tmp: Path
    samples: int = 0
    size: int = 1024  # the end-of-archive blocks
    tokens: int = 0
    longest: int = 0
    end: int = 0
    """The mixture position after its last sample (samples left out as undecodable included)."""
    modalities: Counter = field(default_factory=Counter)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def sample_members(source, proc, ref: int, key: str, length: int, multimodal: bool, video_frames: str = "off",
                   speech: list | None = None):
    """``[(member name, bytes)]`` of one measured sample: its ``.json``, its spoken answers' codes (``speech``: the
    index's, else encoded here) then its media files as on disk, or
    with ``video_frames`` (one of :data:`~vita.data.media.FRAME_FORMATS`) each video's sampled, resized
    frames instead of the video (decoded here by the training code's :func:`~vita.data.media.video_frames`;
    a video that does not decode raises ``BadSample``)."""
    from vita.data.media import MediaError, encode_frames
    from vita.data.media import video_frames as sampled_frames

    raw, where, roots, name = source.read(ref)
    s = proc.parse(raw, where, roots)
    counts = proc.counts(s) if s.media else {}
    media, files = {}, []
    for mod, paths in s.media.items():
        media[mod] = []
        for j, p in enumerate(paths):
            if mod == "video" and video_frames != "off":
                member = f"{key}.{mod}{j}.frames.{video_frames}"
                try:
                    data = encode_frames(sampled_frames(p, proc.opts, proc.spec), video_frames)
                except MediaError as e:
                    raise proc._media_error(s, e) from None
            else:
                member = f"{key}.{mod}{j}.{Path(p).suffix.lower().lstrip('.') or 'bin'}"
                data = Path(p).read_bytes()
            media[mod].append(member)
            files.append((member, data))
    meta = {"record": raw, "where": where, "dataset": name, "id": s.id, "length": length,
            "multimodal": multimodal, "modality": s.modality, "counts": counts, "media": media}
    if video_frames != "off" and s.media.get("video"):
        meta["video_frames"] = video_frames
    if s.speech:
        codes = speech if speech is not None else [c.numpy() for c in proc.speech_codes(s)]
        meta["speech"] = []
        for j, c in enumerate(codes):
            buf = io.BytesIO()
            np.save(buf, np.asarray(c, dtype=np.int32), allow_pickle=False)
            meta["speech"].append(f"{key}.speech{j}.npy")
            files.insert(j, (meta["speech"][-1], buf.getvalue()))
    return [(f"{key}.json", json.dumps(meta, ensure_ascii=False).encode()), *files], s


def write_shards(cfg, out: Path, *, shard_size: int = 10**9, samples_per_shard: int = 0, args: list[str] = (),
                 progress: bool = True, overwrite: bool = False, video_frames: str = "off") -> dict:
    """Write ``cfg.data``'s mixture to shards in ``out``; returns the manifest.

    Args:
        shard_size: bytes per shard at most (a sample larger than that gets a shard of its own).
        samples_per_shard: samples per shard at most (0 = by size only).
        args: the command-line overrides, recorded in the manifest (the re-shard command).
        video_frames: ``off`` (default: each video's file as on disk, decoded when trained on) or a
            :data:`~vita.data.media.FRAME_FORMATS` entry: its sampled, resized frames, read without decoding.
    """
    from vita.check import tokenizer_and_spec
    from vita.data import index_cache, make_processor, open_source
    from vita.data.dataset import index
    from vita.data.media import FRAME_FORMATS

    d = cfg.data
    if video_frames != "off" and video_frames not in FRAME_FORMATS:
        raise DataError(f"--video-frames {video_frames!r}: choose one of off, {', '.join(FRAME_FORMATS)}")
    if d.format == "shards":
        raise DataError("the config is already format=shards; give the data config of the JSON mixture (data=...)")
    tokenizer, spec = tokenizer_and_spec(cfg, None, model_first=True)
    proc = make_processor(d, tokenizer, spec)
    source = open_source(d)
    finger = fmt.fingerprint(d, proc)
    source_key = index_cache.cache_key(source, proc) or f"len{len(source)}"
    out.mkdir(parents=True, exist_ok=True)
    man_path, prog_path = out / fmt.MANIFEST, out / fmt.PROGRESS
    state = {"fingerprint": finger, "source": source_key, "shard_size": shard_size,
             "samples_per_shard": samples_per_shard, "video_frames": video_frames, "shards": []}
    if overwrite:  # the old set goes entirely (no stale shard left beside the new manifest)
        for f in [man_path, prog_path, *out.glob("shard-*.tar")]:
            f.unlink(missing_ok=True)
    for p in (man_path, prog_path):
        if p.is_file():
            old = json.loads(p.read_text())
            same = (old.get("fingerprint") == finger and old.get("source") == source_key
                    and old.get("shard_size") == shard_size and old.get("samples_per_shard") == samples_per_shard
                    and old.get("video_frames", "off") == video_frames)
            if not same:
                raise DataError(f"{out} holds shards of other data or settings ({p.name}); choose another --out "
                                "or pass --overwrite")
            if p == man_path:
                log.info("%s is complete (%d shards); nothing to do", out, len(old["shards"]))
                return old
            state = old
    t0 = time.perf_counter()
    idx = index(source, proc, "skip", progress=progress, use_cache=d.index_cache)
    t_index = time.perf_counter() - t0
    done = state["shards"]
    start = state.get("next", done[-1]["first"] + done[-1]["samples"]) if done else 0
    # videos whose headers read but whose frames do not decode (--video-frames), found while writing
    undecodable = state["undecodable"] = [u for u in state.get("undecodable", []) if u["at"] < start]
    if done:
        log.info("continuing after %d finished shard(s), at sample %d", len(done), start)
    bad = [{"kind": p.kind, "where": p.where, "id": p.sample_id, "detail": p.detail, "message": str(p)}
           for p in idx.problems]

    def write_bad() -> None:
        rows = bad + [{k: v for k, v in u.items() if k != "at"} for u in undecodable]
        (out / fmt.BAD_SAMPLES).write_text("".join(json.dumps(b, ensure_ascii=False) + "\n" for b in rows))

    write_bad()

    it = range(start, len(idx.refs))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(idx.refs), initial=start, desc="sharding", unit="sample", dynamic_ncols=True)
    cur: _Open | None = None
    written = 0
    t1 = time.perf_counter()

    def finish(c: _Open) -> None:
        c.tar.close()
        with open(c.tmp, "rb") as f:
            os.fsync(f.fileno())
        final = out / c.name
        os.replace(c.tmp, final)
        done.append({"name": c.name, "first": c.first, "samples": c.samples, "bytes": final.stat().st_size,
                     "tokens": c.tokens, "longest": c.longest, "modalities": dict(sorted(c.modalities.items()))})
        state["next"] = c.end
        _atomic_json(prog_path, state)

    for k in it:
        try:
            members, s = sample_members(source, proc, int(idx.refs[k]), fmt.sample_key(k), int(idx.lengths[k]),
                                        bool(idx.multimodal[k]), video_frames, idx.speech.get(k))
        except BadSample as e:
            undecodable.append({"kind": e.kind, "where": e.where, "id": e.sample_id, "detail": e.detail,
                                "message": str(e), "at": k})
            write_bad()
            if cur is not None:
                cur.end = k + 1
            continue
        size = sum(_tar_size(len(b)) for _, b in members)
        if cur is not None and ((samples_per_shard and cur.samples >= samples_per_shard)
                                or cur.size + size > shard_size):
            finish(cur)
            cur = None
        if cur is None:
            name = fmt.shard_name(len(done))
            tmp = out / f".{name}.tmp"
            cur = _Open(name, k, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT), tmp)
        for m, b in members:
            _add(cur.tar, m, b)
        cur.samples += 1
        cur.end = k + 1
        cur.size += size
        cur.tokens += int(idx.lengths[k])
        cur.longest = max(cur.longest, int(idx.lengths[k]))
        cur.modalities.update([m for m in ("image", "video", "audio") if s.media.get(m)] or ["text"])
        written += size
        if bar is not None:
            bar.update(1)
    if cur is not None:
        finish(cur)
    if bar is not None:
        bar.close()
    t_write = time.perf_counter() - t1
    from vita import __version__

    modalities = Counter()
    for sh in done:
        modalities.update(sh["modalities"])
    manifest = {"format": "vita-shards", "version": fmt.FORMAT_VERSION if video_frames == "off" else fmt.FRAMES_VERSION,
                "video_frames": video_frames, "vita_version": __version__,
                "data": d.name, "args": list(args), "fingerprint": finger, "source": source_key,
                "shard_size": shard_size, "samples_per_shard": samples_per_shard,
                "samples": sum(sh["samples"] for sh in done), "tokens": sum(sh["tokens"] for sh in done),
                "bytes": sum(sh["bytes"] for sh in done), "modalities": dict(sorted(modalities.items())),
                "bad_samples": len(bad) + len(undecodable), "shards": done,
                "timing": {"index_s": round(t_index, 3), "write_s": round(t_write, 3),
                           "written_bytes": written, "samples_written": len(idx.refs) - start - len(undecodable)}}
    _atomic_json(man_path, manifest)
    prog_path.unlink(missing_ok=True)
    return manifest
