"""The local cluster itself: idempotent start, one-line reasons, no job that waits forever, srun ranks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import PY, ROOT, vita_env
from tests.slurm.cluster import slurm
from tests.slurm.conftest import LOCAL_SLURM

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def _daemon_pids() -> dict[str, str]:
    """slurmctld's and slurmd's PIDs, from the pid files the running config names."""
    conf = dict(line.split("=", 1) for line in slurm("scontrol", "show", "config").splitlines() if " = " in line)
    conf = {k.strip(): v.strip() for k, v in conf.items()}
    return {k: Path(conf[k]).read_text().strip() for k in ("SlurmctldPidFile", "SlurmdPidFile")}


def test_second_start_leaves_the_running_cluster_alone():
    before = _daemon_pids()
    proc = subprocess.run(["bash", str(LOCAL_SLURM / "start.sh")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "already running" in proc.stdout
    assert _daemon_pids() == before
    assert slurm("sinfo", "-h", "-o", "%T").split()[0] in ("idle", "mixed", "allocated")


def test_start_refuses_a_foreign_config_and_says_why(tmp_path):
    foreign = tmp_path / "slurm.conf"
    foreign.write_text("ClusterName=somebody-elses\n")
    proc = subprocess.run(["bash", str(LOCAL_SLURM / "start.sh")], capture_output=True, text=True, timeout=60,
                          env={**vita_env(), "SLURM_CONF": str(foreign), "SLURM_LOCAL_STATE": str(tmp_path / "st")})
    assert proc.returncode != 0
    assert "was not written by this script; move it away or set SLURM_CONF" in proc.stderr
    assert foreign.read_text() == "ClusterName=somebody-elses\n"


def test_a_job_that_can_never_fit_fails_at_once_instead_of_waiting():
    proc = subprocess.run(["sbatch", "-n", "512", "--wrap", "true"], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "More processors requested than permitted" in proc.stderr


def test_srun_two_tasks_initialise_one_world_from_slurm_variables():
    """Plain srun (no submitit, no torchrun): ranks, master and port come from SLURM's variables."""
    code = (
        "import torch, torch.distributed as dist\n"
        "from vita.engine.distributed import init_distributed, close_distributed, all_reduce_sum\n"
        "import os\n"
        "info = init_distributed(1)\n"
        "total = all_reduce_sum(info.rank + 1)\n"
        "print(f'rank={info.rank} local={info.local_rank} world={info.world_size} launcher={info.launcher} '\n"
        "      f'sum={total} master={os.environ[\"MASTER_ADDR\"]}:{os.environ[\"MASTER_PORT\"]}', flush=True)\n"
        "close_distributed(info)\n"
    )
    proc = subprocess.run(["srun", "-n", "2", "-l", "--kill-on-bad-exit=1", PY, "-c", code], cwd=ROOT,
                          env=vita_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = sorted(line for line in proc.stdout.splitlines() if "rank=" in line)
    assert len(lines) == 2, proc.stdout
    for r, line in enumerate(lines):
        assert f"rank={r} local={r} world=2 launcher=slurm sum=3.0" in line, line
    masters = {line.rsplit("master=", 1)[1] for line in lines}
    assert len(masters) == 1, masters
