"""SIGKILL a run at a random step after a checkpoint, restart it: the final weights are bit-identical. While it
runs, the same command again is refused (one writer per run dir); the restart takes the dead holder's lock over."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import PY, ROOT, find_run, live_rglob, load_final, losses, quiet, run_vita, vita_env

STEPS = 30
COMMON = ["experiment=smoke", "data.limit=512", f"train.max_steps={STEPS}", "train.ckpt_every=4",
          "train.keep_last=2", "engine.micro_batch_size=8", "optim.warmup_steps=5"]

pytestmark = pytest.mark.slow


def _last_step(metrics) -> int:
    try:
        lines = metrics.read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (FileNotFoundError, ValueError, KeyError, IndexError):
        return 0


def _kill_at(args: list[str], root, name: str, kill_step: int, timeout: float = 300,
             while_running=None) -> tuple[int, int]:
    """Run, SIGKILL at ``kill_step``; ``while_running(pid)`` is called once, after the first step, with the run
    paused (SIGSTOP: it keeps its run dir lock, and its steps are the same). Returns (step, pid)."""
    proc = subprocess.Popen([PY, "-m", "vita.run", *args], cwd=ROOT, env=vita_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    step = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            runs = live_rglob(root / name, "metrics.jsonl")
            step = _last_step(runs[0]) if runs else 0
            if while_running is not None and step >= 1:
                proc.send_signal(signal.SIGSTOP)
                try:
                    while_running(proc.pid)
                finally:
                    proc.send_signal(signal.SIGCONT)
                while_running = None
            if step >= kill_step:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None and step < kill_step:
            proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"run ended with {proc.returncode} before the kill at step {kill_step}"
    return step, proc.pid


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> tuple[Path, Path]:
    """The uninterrupted 30-step run (output root, run dir): the reference of the kill test, and the complete
    run that the rerun and changed-config tests start again (each on its own copy)."""
    root = tmp_path_factory.mktemp("straight") / "outputs"
    run_vita([*quiet("straight", root), *COMMON])
    return root, find_run(root, "straight")


def _copy_of(straight, tmp_path) -> tuple[Path, list[str]]:
    """A copy of the straight run and the arguments that name it (its own config, pinned to the copy)."""
    root, run_dir = straight
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy, [*quiet("straight", root), f"hydra.run.dir={copy}"]


def test_sigkill_and_restart_is_bit_identical(out_root, straight):
    straight_dir = straight[1]
    kill_step = random.Random().randint(5, STEPS - 8)
    args = [*quiet("killed", out_root), *COMMON]
    refused = []

    def second_writer(pid: int) -> None:  # the same command again while the first one holds the run dir
        refused.append(run_vita(args, check=False))
        refused.append(pid)

    killed_at, pid = _kill_at(args, out_root, "killed", kill_step, while_running=second_writer)
    second, holder = refused
    said = [ln for ln in second.stderr.splitlines() if ln.startswith("error:")]
    assert second.returncode == 2 and len(said) == 1, second.stderr[-3000:]
    assert f"is in use by pid {holder} on host " in said[0] and ".vita.lock" in said[0], said
    run_dir = find_run(out_root, "killed")
    assert not (run_dir / "COMPLETE.json").exists()
    proc = run_vita(args)
    out = proc.stdout + proc.stderr
    assert f"taking over the lock of pid {pid} on host" in out, out[-3000:]  # the dead holder's stale lock
    assert "resumed from" in out, f"did not resume after kill at step {killed_at}"

    a, b = load_final(straight_dir), load_final(run_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after a kill at step {killed_at}"
    assert losses(run_dir) == losses(straight_dir)

    # resume_from: a new run dir started from the straight run's next-to-last checkpoint ends identical
    ckpts = sorted((straight_dir / "checkpoints").glob("step_*"))
    assert len(ckpts) == 2  # keep_last
    run_vita([*quiet("branch", out_root), *COMMON, f"train.resume_from={ckpts[0]}"])
    c = load_final(find_run(out_root, "branch"))
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_rerun_of_complete_run_does_nothing(straight, tmp_path):
    run_dir, pinned = _copy_of(straight, tmp_path)
    proc = run_vita([*pinned, *COMMON])
    assert "already complete" in proc.stdout


def test_changed_config_in_same_run_dir_is_refused(straight, tmp_path):
    run_dir, pinned = _copy_of(straight, tmp_path)
    base = [*pinned, *(a for a in COMMON if not a.startswith("train.max_steps="))]
    proc = run_vita([*base, "train.seed=7", f"train.max_steps={STEPS + 8}"], check=False)
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert "different config" in proc.stderr and "train.seed: 42 -> 7" in proc.stderr
    assert "train.max_steps" not in proc.stderr  # a longer run of the same config may resume


def test_sigkill_and_restart_with_packing_is_bit_identical(out_root):
    """Packing across the batch (token_budget + packing): a run killed mid-epoch and restarted ends with
    the same weights and losses as one never stopped (the packed plan is a pure function of the seed)."""
    common = ["experiment=smoke", "data.limit=512", "train.max_steps=24", "train.ckpt_every=4", "train.keep_last=2",
              "optim.warmup_steps=3", "data.sampler=token_budget", "data.packing=true", "data.max_length=128",
              "data.token_budget=512", "data.pack_window=64"]
    run_vita([*quiet("straight", out_root), *common])
    args = [*quiet("killed", out_root), *common]
    killed_at, _ = _kill_at(args, out_root, "killed", random.Random().randint(5, 16))
    run_dir = find_run(out_root, "killed")
    proc = run_vita(args)
    assert "resumed from" in proc.stdout + proc.stderr, f"did not resume after kill at step {killed_at}"
    a, b = load_final(find_run(out_root, "straight")), load_final(run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"differs after a kill at {killed_at}"
    assert losses(run_dir) == losses(find_run(out_root, "straight"))


def test_resume_of_the_tiny_omni_model_on_media_is_bit_identical(out_root):
    """The omni model draws from torch's RNG in its forward (the audio encoder's dropout), which text runs do not: a
    run resumed from step 2 (train.resume_from, a new run dir) has the same losses and final weights as one never
    stopped, so nothing between the RNG restore and step 3 (the data loader starting) draws from that RNG."""
    common = ["experiment=chatterbot_tiny", "model=tiny_omni", "data=demo", "data.limit=12", "data.num_workers=0",
              "engine.micro_batch_size=2", "train.max_steps=4", "train.ckpt_every=2", "train.keep_last=3",
              "optim.warmup_steps=1"]
    run_vita([*quiet("straight", out_root), *common])
    straight = find_run(out_root, "straight")
    run_vita([*quiet("resumed", out_root), *common, f"train.resume_from={straight / 'checkpoints' / 'step_00000002'}"])
    resumed = find_run(out_root, "resumed")
    assert losses(resumed) == losses(straight)[2:]
    a, b = load_final(straight), load_final(resumed)
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
