"""Checkpoints: atomic publish, exact resume (DeepSpeed state + data position + RNG), final export.

Layout of ``<run_dir>/checkpoints``::

    step_00000100/       DeepSpeed files + rng_rank<r>.json + the manifest (written last)
    latest               the tag of the newest complete checkpoint (moved last)
    best, best record    with train.keep_best: the tag of the best checkpoint, its metric and value

A checkpoint is written as ``.tmp-step_XXXXXXXX``, completed with a manifest of file sizes,
renamed to its tag, and only then does ``latest`` move. A crash at any point leaves either
the old checkpoint set or the new one, never a half-written one that looks complete.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from vita.artefacts import BEST, BEST_FILE, MANIFEST
from vita.collectives import barrier
from vita.errors import CheckpointError

log = logging.getLogger("vita")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as JSON-safe data."""
    np_state = np.random.get_state()
    state = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state().tolist()
    return state


def set_rng_state(state: dict) -> None:
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8))


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def save_checkpoint(engine, ckpt_root: Path, step: int, client_state: dict, keep_last: int, rank: int) -> Path:
    """Save, publish atomically, prune; collective (every rank calls it)."""
    tag = tag_for(step)
    tmp_tag = f".tmp-{tag}"
    if rank == 0:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(ckpt_root / tmp_tag, ignore_errors=True)
    barrier()
    engine.save_checkpoint(str(ckpt_root), tag=tmp_tag, client_state=client_state, save_latest=False)
    _write_atomic(ckpt_root / tmp_tag / f"rng_rank{rank}.json", json.dumps(rng_state()))
    barrier()
    final = ckpt_root / tag
    if rank == 0:
        files = {str(p.relative_to(ckpt_root / tmp_tag)): p.stat().st_size
                 for p in sorted((ckpt_root / tmp_tag).rglob("*")) if p.is_file()}
        _write_atomic(ckpt_root / tmp_tag / MANIFEST, json.dumps({"step": step, "files": files}, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(ckpt_root / tmp_tag, final)
        _fsync_dir(ckpt_root)
        _write_atomic(ckpt_root / "latest", tag)
        prune(ckpt_root, keep_last)
    barrier()
    return final


def prune(ckpt_root: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints (and stale temp folders);
    the one named in ``best`` (``train.keep_best``) is always kept."""
    best = (ckpt_root / BEST).read_text().strip() if (ckpt_root / BEST).is_file() else None
    tags = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir())
    for old in tags[: max(0, len(tags) - max(1, keep_last))]:
        if old.name != best:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in ckpt_root.glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def mark_best(ckpt_root: Path, tag: str, info: dict) -> None:
    """Record ``tag`` as the best checkpoint (``best`` holds the tag, :data:`~vita.artefacts.BEST_FILE` the
    metric and value)."""
    _write_atomic(ckpt_root / BEST_FILE, json.dumps({"tag": tag, **info}))
    _write_atomic(ckpt_root / BEST, tag)


def check_complete(path: Path) -> str | None:
    """``None`` if the checkpoint folder is complete, else what is wrong with it."""
    man = path / MANIFEST
    if not man.is_file():
        return f"{path.name} has no {MANIFEST} (its save never finished)"
    try:
        files = json.loads(man.read_text())["files"]
        files = {str(k): int(v) for k, v in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{path.name}/{MANIFEST} is unreadable ({type(e).__name__}: {e})"
    for name, size in files.items():
        f = path / name
        if not f.is_file():
            return f"{path.name} lacks {name}"
        if f.stat().st_size != size:
            return f"{path.name}/{name} is {f.stat().st_size} bytes, expected {size} (truncated?)"
    return None


def find_resumable(ckpt_root: Path) -> Path | None:
    """Newest complete checkpoint under ``ckpt_root``; damaged ones are skipped with a warning.

    Raises:
        CheckpointError: checkpoints exist but none is usable (never silently start over).
    """
    if not ckpt_root.is_dir():
        return None
    # Newest first by step. ``latest`` moves last, so a complete folder newer than it (a crash
    # between the rename and the pointer update) is still the right place to continue from.
    candidates = sorted((p for p in ckpt_root.glob("step_*") if p.is_dir()), reverse=True)
    problems = []
    for cand in candidates:
        why = check_complete(cand)
        if why is None:
            if problems:
                log.warning("resuming from %s; skipped damaged checkpoints: %s", cand.name, "; ".join(problems))
            return cand
        problems.append(why)
    if problems:
        raise CheckpointError(
            f"{ckpt_root}: no usable checkpoint ({'; '.join(problems)}). Delete the run dir to start over, "
            "or point train.resume_from at a good checkpoint"
        )
    return None


def load_checkpoint(engine, path: Path, rank: int) -> dict:
    """Load DeepSpeed state and this rank's RNG; returns the client state."""
    why = check_complete(path)
    if why is not None:
        raise CheckpointError(f"cannot resume from {path}: {why}")
    loaded, client = engine.load_checkpoint(str(path.parent), tag=path.name, load_optimizer_states=True,
                                            load_lr_scheduler_states=True)
    if loaded is None:
        raise CheckpointError(f"DeepSpeed could not load {path}")
    rng_file = path / f"rng_rank{rank}.json"
    if rng_file.is_file():
        set_rng_state(json.loads(rng_file.read_text()))
    else:
        log.warning("%s has no RNG state for rank %d (world size changed?); RNG not restored", path.name, rank)
    return client or {}
