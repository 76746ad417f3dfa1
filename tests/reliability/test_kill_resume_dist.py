"""SIGKILL a 2-rank ZeRO-2 run three times (once while a checkpoint is being written, once torchrun alone, whose
orphaned workers must stop by themselves), restart it each time: the final weights equal those of an
uninterrupted 2-rank run, tensor for tensor."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, TORCHRUN, _free_port, load_final, losses, quiet, run_vita, vita_env

STEPS = 24
COMMON = ["experiment=smoke", "data.limit=256", f"train.max_steps={STEPS}", "train.ckpt_every=4",
          "train.keep_last=2", "engine=zero2", "engine.micro_batch_size=4", "optim.warmup_steps=3"]

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def _last_step(run_dir: Path) -> int:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (FileNotFoundError, ValueError, KeyError, IndexError):
        return 0


def _writing_checkpoint(run_dir: Path) -> str | None:
    try:
        return next((e.name for e in os.scandir(run_dir / "checkpoints") if e.name.startswith(".tmp-step_")), None)
    except FileNotFoundError:
        return None


def _descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively, from /proc (torchrun starts its workers in new sessions)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _kill_tree(pid: int) -> list[int]:
    """SIGKILL torchrun's process group and that of every worker (each runs in its own session)."""
    groups, pids = {pid}, [pid, *_descendants(pid)]
    for child in pids[1:]:
        try:
            groups.add(os.getpgid(child))
        except ProcessLookupError:
            pass
    for g in groups:
        try:
            os.killpg(g, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def _kill_when(args: list[str], run_dir: Path, what: str, kill_step: int, timeout: float = 300) -> str:
    """Start torchrun in its own session; SIGKILL all its processes at ``kill_step`` or mid-checkpoint."""
    cmd = [TORCHRUN, "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "vita.run", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=vita_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    seen, killed = None, []
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            seen = _writing_checkpoint(run_dir) if what == "ckpt" else (
                f"{what} {_last_step(run_dir)}" if _last_step(run_dir) >= kill_step else None)
            if seen and what == "orphan":  # torchrun alone: its workers must notice and stop by themselves
                killed = [proc.pid, *_descendants(proc.pid)]
                os.kill(proc.pid, signal.SIGKILL)
                break
            if seen:
                killed = _kill_tree(proc.pid)
                break
            time.sleep(0.001)
    finally:
        if proc.poll() is None and not seen:
            _kill_tree(proc.pid)
        proc.wait(timeout=60)
    if what == "orphan":
        return _orphans_stop(run_dir, killed, seen)
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in killed) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in killed), f"a process survived the kill: {[p for p in killed if _alive(p)]}"
    assert seen, f"run ended (rc {proc.returncode}) before the kill ({what}, step {kill_step})"
    return seen


def _orphans_stop(run_dir: Path, workers: list[int], seen: str, wait_s: float = 120) -> str:
    """After SIGKILL of torchrun alone: its workers (re-parented) stop by themselves at a step's end with a
    checkpoint of that step, and write nothing more (vita/engine/parent_watch.py)."""
    deadline = time.monotonic() + wait_s
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in workers if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} still running {wait_s:.0f}s after torchrun was killed at {seen}"
    stopped = _last_step(run_dir)
    assert (run_dir / "checkpoints" / f"step_{stopped:08d}").is_dir(), f"no checkpoint of step {stopped} ({seen})"
    return f"{seen} (workers stopped at step {stopped})"


def test_three_kills_two_ranks_zero2_bit_identical(out_root):
    straight = out_root / "straight"
    run_vita([*quiet("straight", out_root), f"hydra.run.dir={straight}", *COMMON], world=2)

    run_dir = out_root / "killed"
    args = [*quiet("killed", out_root), f"hydra.run.dir={run_dir}", *COMMON]
    rng = random.Random()
    # the third kill is of torchrun alone: its orphaned workers stop themselves at a step's end, with a checkpoint
    plan = [("step", rng.randint(2, 9)), ("ckpt", 0), ("orphan", rng.randint(12, 15))]
    kills = []
    for what, step in plan:
        kills.append(_kill_when(args, run_dir, what, step))
        assert not (run_dir / "COMPLETE.json").exists()
    print(f"\nkilled at: {kills}")
    proc = run_vita(args, world=2)
    assert "resumed from" in proc.stdout + proc.stderr, f"did not resume after kills {kills}"

    a, b = load_final(straight), load_final(run_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after kills at {kills}"
    assert losses(run_dir) == losses(straight), f"loss curve differs after kills at {kills}"
