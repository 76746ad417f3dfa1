"""Training jobs submitted through the Hydra submitit launcher (``hydra/launcher=slurm``)."""

from __future__ import annotations

import math

import pytest

from tests.conftest import load_final, losses, read_json
from tests.slurm.cluster import JOB_TIMEOUT_S, Launch, job_field, wait_job_state

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

TINY = ["experiment=smoke", "data.limit=64", "train.max_steps=6"]


def test_two_task_gloo_job_completes_and_writes_metrics(tmp_path):
    run = Launch(["hydra.launcher.tasks_per_node=2", *TINY], "two_tasks", tmp_path / "outputs")
    job = run.job_id()
    run.wait()

    wait_job_state(job, "COMPLETED")
    assert job_field(job, "NumTasks") == "2"
    (run_dir,) = run.run_dirs()
    assert run_dir.parent.name == "multirun"  # <output_root>/<name>/multirun/<overrides>
    rows = losses(run_dir)
    assert len(rows) == 6 and all(math.isfinite(x) for x in rows)
    assert read_json(run_dir / "COMPLETE.json")["step"] == 6
    logs = run.job_logs()
    assert "world size 2 (slurm)" in logs, run.tail()  # ranks from SLURM_PROCID/NTASKS, not a world of one
    assert len(list(run_dir.parent.glob(f".submitit/{job}/{job}_*_log.out"))) == 2  # one log per task
    said = run.log.read_text()
    assert f"SLURM job {job} done: run dir {run_dir}" in said, said[-2000:]  # where the run and its logs are
    assert f"logs: {run_dir.parent / '.submitit' / job}" in said, said[-2000:]


def test_job_failing_at_start_ends_the_submit_with_its_own_error(tmp_path):
    """A job that exits at start (an unknown backbone) writes no result file and this cluster has no accounting
    (sacct fails): the submitting command still ends, non-zero, with the job's error line and its log path."""
    run = Launch(["experiment=smoke", "model.backbone=tiny-qwen3"], "fails", tmp_path / "outputs")
    try:
        job = run.job_id()
        rc = run.proc.wait(timeout=JOB_TIMEOUT_S)
    except BaseException:
        run.cancel()
        raise
    said = run.log.read_text()
    assert rc == 1, said[-3000:]
    assert f"error: SLURM job {job} ended FAILED (exit code 2:0) without a result" in said, said[-3000:]
    assert "| error: unknown backbone 'tiny-qwen3'. Did you mean 'tiny-qwen2'" in said, said[-3000:]
    assert f"log: {tmp_path / 'outputs' / 'fails' / 'multirun' / '.submitit' / job / f'{job}_0_log.err'}" in said
    assert "Traceback" not in said, said[-3000:]


def test_lr_sweep_runs_as_two_slurm_jobs_each_with_its_run_dir(tmp_path):
    run = Launch(["optim.lr=1e-4,3e-4", *TINY], "sweep", tmp_path / "outputs")
    run.wait()

    dirs = run.run_dirs()
    assert [d.name for d in dirs] == ["data.limit:64+optim.lr:0.0001", "data.limit:64+optim.lr:0.0003"], dirs
    jobs = sorted(p.name for p in dirs[0].parent.glob(".submitit/*_*") if p.is_dir())
    array = jobs[0].split("_")[0]
    assert jobs == [f"{array}_0", f"{array}_1"], jobs  # one SLURM job array, one element per value
    assert "#SBATCH --array=0-1" in (dirs[0].parent / ".submitit" / array / f"{array}_submission.sh").read_text()
    for job in jobs:
        wait_job_state(job, "COMPLETED")
    for d, lr in zip(dirs, (1e-4, 3e-4)):
        assert read_json(d / "vita_config.json")["optim"]["lr"] == lr
        assert (d / "COMPLETE.json").is_file()
    a, b = (load_final(d) for d in dirs)
    assert any(not (a[k] == b[k]).all() for k in a), "two learning rates gave the same weights"
