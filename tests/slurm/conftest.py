"""A real one-node SLURM cluster for these tests: started once per session, stopped after.

``launch/local-slurm/start.sh`` installs munge + slurm-wlm if they are missing (as root) and
starts the daemons; if it cannot, every test here errors with its reason. Every wait on SLURM
has a timeout; on a timeout the test cancels its jobs and fails with the queue and the log tail.
Set ``VITA_SKIP_SLURM=1`` to skip these tests on a machine where no cluster can run.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import ROOT

LOCAL_SLURM = ROOT / "launch" / "local-slurm"
START_TIMEOUT_S = 300  # includes apt-get install on a fresh machine


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """A running local cluster; stopped (and purged) at the end if this session started it."""
    if os.environ.get("VITA_SKIP_SLURM") == "1":
        pytest.skip("VITA_SKIP_SLURM=1")
    try:
        proc = subprocess.run(["bash", str(LOCAL_SLURM / "start.sh")], capture_output=True, text=True,
                              timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"local SLURM cluster did not start within {START_TIMEOUT_S}s: {(e.stderr or '')[-1500:]}",
                    pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"local SLURM cluster did not start (launch/local-slurm/start.sh, rc {proc.returncode}):\n"
                    f"{(proc.stdout + proc.stderr)[-2000:]}", pytrace=False)
    started = "local-slurm: started" in proc.stdout
    yield
    if started:
        subprocess.run(["bash", str(LOCAL_SLURM / "stop.sh"), "--purge"], capture_output=True, timeout=120)
