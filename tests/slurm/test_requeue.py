"""A 2-task job stopped twice in the middle of training and requeued ends bit-identical to an uninterrupted one.

The two ways SLURM stops a job, each at a random step of the same job:
* the warning before the time limit (SIGUSR2, what ``--signal=USR2@signal_delay_s`` sends, here
  sent at once with ``scancel --signal``): vita checkpoints and submitit requeues the job itself;
* ``scontrol requeue`` (SIGTERM, then SIGKILL after KillWait): vita checkpoints and exits, SLURM requeues.
"""

from __future__ import annotations

import json
import random
import re

import pytest
import torch

from tests.conftest import live_rglob, load_final, losses
from tests.slurm.cluster import Launch, job_field, slurm, wait_job_state, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]

STEPS = 80
# ckpt_every=0: no periodic checkpoints, so a resume past step 0 proves the checkpoint was taken on the signal.
COMMON = ["hydra.launcher.tasks_per_node=2", "experiment=smoke", "data.limit=512", f"train.max_steps={STEPS}",
          "train.ckpt_every=0", "engine.micro_batch_size=8", "optim.warmup_steps=5"]


def _last_step(run: Launch) -> int:
    for metrics in live_rglob(run.root / run.name, "metrics.jsonl"):
        lines = metrics.read_text().splitlines()
        try:
            return json.loads(lines[-1])["step"] if lines else 0
        except (ValueError, KeyError):  # a line being written
            return 0
    return 0


def _interrupt(run: Launch, job: str, after: int, command: list[str]) -> None:
    """Once the job has logged step ``after``, run ``command`` on it; release it when it is requeued."""
    restarts = int(job_field(job, "Restarts"))
    wait_until(f"{run.name} to reach step {after}", lambda: _last_step(run) >= after, timeout=300, poll=0.05)
    slurm(*command, job)
    wait_until(f"job {job} to be requeued after `{' '.join(command)}`",
               lambda: int(job_field(job, "Restarts")) > restarts and job_field(job, "JobState") == "PENDING",
               timeout=90)
    slurm("scontrol", "update", f"JobId={job}", "StartTime=now")  # SLURM holds a requeued job ~2 min; not here


def _resumed_steps(run: Launch) -> list[int]:
    return [int(s) for s in re.findall(r"resumed from \S+ at step (\d+)", run.job_logs())]


def test_job_stopped_by_time_limit_signal_and_by_scontrol_requeue_ends_bit_identical(tmp_path):
    rng = random.Random()
    straight = Launch(COMMON, "straight", tmp_path / "straight")  # runs next to the interrupted job
    run = Launch(COMMON, "stopped", tmp_path / "stopped")
    try:
        job = run.job_id()
        first = rng.randint(5, 30)
        _interrupt(run, job, first, ["scancel", "--signal=USR2"])
        wait_until("the requeued job to resume", lambda: _resumed_steps(run), timeout=300)
        (resumed1,) = _resumed_steps(run)
        second = resumed1 + rng.randint(5, 25)
        _interrupt(run, job, second, ["scontrol", "requeue"])
        run.wait()
        straight.wait()
        wait_job_state(job, "COMPLETED")
    except BaseException:
        run.cancel()
        straight.cancel()
        raise

    logs = run.job_logs()
    what = f"SIGUSR2 after step {first} and scontrol requeue after step {second} (resumed at {_resumed_steps(run)})"
    assert "SIGUSR2: checkpoint saved; submitit requeues the job" in logs, run.tail()
    assert "SIGTERM: checkpoint saved; exiting" in logs, run.tail()
    resumed = _resumed_steps(run)
    assert len(resumed) == 2, what
    # No periodic checkpoints (ckpt_every=0): each resume point is the checkpoint taken on the signal.
    assert first <= resumed[0] < second <= resumed[1] < STEPS, what

    (a_dir,), (b_dir,) = straight.run_dirs(), run.run_dirs()
    a, b = load_final(a_dir), load_final(b_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after {what}"
    assert losses(b_dir) == losses(a_dir), f"loss curve differs after {what}"
    assert len(losses(b_dir)) == STEPS
