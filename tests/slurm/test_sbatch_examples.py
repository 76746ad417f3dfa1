"""The sbatch examples in launch/ for users who do not use submitit: plain srun, and torchrun per node."""

from __future__ import annotations

import math
import subprocess

import pytest

from tests.conftest import PY, ROOT, find_run, losses, vita_env
from tests.slurm.cluster import job_field, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

TINY = ["experiment=smoke", "data.limit=64", "train.max_steps=6", "logging.progress_bar=false"]


def _sbatch(script: str, sbatch_args: list[str], args: list[str], log, **env: str) -> str:
    proc = subprocess.run(["sbatch", "--parsable", f"--output={log}", *sbatch_args, str(ROOT / "launch" / script),
                           *args], cwd=ROOT, env=vita_env(PY=PY, **env), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def test_sbatch_srun_and_sbatch_torchrun_examples_train_two_ranks(tmp_path):
    root = tmp_path / "outputs"
    srun_job = _sbatch("sbatch.sh", ["--ntasks-per-node=2", "--cpus-per-task=1"],
                       [*TINY, "name=srun", f"output_root={root}"], tmp_path / "srun.log")
    torchrun_job = _sbatch("sbatch_torchrun.sh", ["--cpus-per-task=2"],
                           [*TINY, "name=torchrun", f"output_root={root}"], tmp_path / "torchrun.log", NPROC="2")
    for job in (srun_job, torchrun_job):
        state = wait_until(f"sbatch job {job} to end",
                           lambda j=job: (s := job_field(j, "JobState")) not in ("PENDING", "RUNNING", "COMPLETING")
                           and s, timeout=300)
        logs = "".join(f"--- {f.name}\n{f.read_text()[-3000:]}" for f in sorted(tmp_path.glob("*.log")))
        assert state == "COMPLETED", f"job {job} ended {state}\n{logs}"
    for name, launcher in (("srun", "slurm"), ("torchrun", "torchrun")):
        run_dir = find_run(root, name)
        rows = losses(run_dir)
        assert len(rows) == 6 and all(math.isfinite(x) for x in rows)
        assert f"world size 2 ({launcher})" in (tmp_path / f"{name}.log").read_text()
