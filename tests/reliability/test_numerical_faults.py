"""A NaN gradient behind a finite loss, and an inf loss: ``train.nan_policy`` stop names the step and
the samples, skip drops the update and counts it; the weights never continue from NaN."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from tests.conftest import PY, ROOT, TORCHRUN, _free_port, load_final, quiet, vita_env

BASE = ["experiment=smoke", "data.limit=64", "train.max_steps=6", "train.ckpt_every=0", "optim.warmup_steps=1"]
FAULT_CALL = 3  # the 3rd forward on rank 0: step 3 (grad_accum 1)

pytestmark = pytest.mark.slow


def _run(tmp_path, mode: str, policy: str, zero: int, world: int = 1,
         extra: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess, object]:
    run_dir = tmp_path / f"{mode}_{policy}_z{zero}_w{world}"
    args = [*quiet("fault", tmp_path), f"hydra.run.dir={run_dir}", *BASE, f"engine=zero{zero}",
            f"train.nan_policy={policy}", *extra]
    job = ["-m", "tests.reliability.fault_job", mode, str(FAULT_CALL), *args]
    cmd = [PY, *job] if world == 1 else [TORCHRUN, "--nproc_per_node", str(world), "--master_port",
                                         str(_free_port()), *job]
    proc = subprocess.run(cmd, cwd=ROOT, env=vita_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                          timeout=300)
    return proc, run_dir


def _metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_finite_final(run_dir) -> None:
    for k, t in load_final(run_dir).items():
        assert torch.isfinite(t).all(), f"{k} holds NaN/inf after a skipped fault"


@pytest.mark.parametrize("zero,world", [(0, 1), (2, 1), (3, 1), (2, 2)], ids=["z0", "z2", "z3", "z2-2ranks"])
def test_nan_gradient_skip(tmp_path, zero, world):
    """skip drops the step-3 update and counts it; the weights stay finite. ZeRO-0 also stops after step 4 and
    resumes to step 6 without a fault: the counter is checkpointed, so it still says 1 (a fresh one says 0)."""
    resume = zero == 0
    proc, run_dir = _run(tmp_path, "grad", "skip", zero, world, ("train.max_steps=4",) if resume else ())
    assert proc.returncode == 0 or "run complete:" in proc.stdout, proc.stderr[-4000:]
    assert "step 3: non-finite gradient, optimizer update skipped" in proc.stderr + proc.stdout
    if resume:
        args = [*quiet("fault", tmp_path), f"hydra.run.dir={run_dir}", *BASE, "engine=zero0", "train.nan_policy=skip"]
        again = subprocess.run([PY, "-m", "vita.run", *args], cwd=ROOT, env=vita_env(), capture_output=True, text=True,
                               timeout=300)
        assert again.returncode == 0 and "resumed from" in again.stdout + again.stderr, again.stderr[-3000:]
    rows = _metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["nonfinite_skipped_steps"] for r in rows] == [0, 0, 1, 1, 1, 1]
    assert all(r["nonfinite_skipped_micro_batches"] == 0 for r in rows)
    _assert_finite_final(run_dir)


@pytest.mark.parametrize("zero", [0, 2])
def test_nan_gradient_stop(tmp_path, zero):
    proc, run_dir = _run(tmp_path, "grad", "stop", zero)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "non-finite gradient at step 3 (the weights were not updated; this rank's batch: " in proc.stderr
    assert "train.nan_policy=skip" in proc.stderr
    assert not (run_dir / "final").exists()


def test_inf_loss_skip_and_stop(tmp_path):
    proc, run_dir = _run(tmp_path, "loss", "skip", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step 3: non-finite loss, micro-batch" in proc.stderr + proc.stdout
    rows = _metrics(run_dir)
    assert rows[-1]["nonfinite_skipped_micro_batches"] == 1 and rows[-1]["nonfinite_skipped_steps"] == 0
    assert all(r["loss"] == r["loss"] for r in rows[:2])
    _assert_finite_final(run_dir)

    proc, run_dir = _run(tmp_path, "loss", "stop", 2)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "non-finite loss at step 3 (a rank's batch: " in proc.stderr
    assert not (run_dir / "final").exists()

