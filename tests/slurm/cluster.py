"""Helpers for tests on the local SLURM cluster: client commands, timed waits, background launches."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import PY, ROOT, live_rglob, vita_env

JOB_TIMEOUT_S = 420


def slurm(*cmd: str, timeout: float = 30, check: bool = True) -> str:
    """Run a SLURM client command with a timeout; returns its stdout."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> rc {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def job_ids(job_name: str) -> list[str]:
    """Ids of the queued/running jobs named ``job_name`` (array elements as ``A_i``)."""
    return slurm("squeue", "-h", "-n", job_name, "-o", "%i").split()


def job_field(job_id: str, key: str) -> str:
    """One ``Key=Value`` field of ``scontrol show job`` (finished jobs stay for MinJobAge)."""
    for token in slurm("scontrol", "show", "job", job_id).split():
        if token.startswith(f"{key}="):
            return token.split("=", 1)[1]
    raise AssertionError(f"scontrol show job {job_id} has no {key}")


def wait_until(what: str, predicate: Callable[[], object], timeout: float, poll: float = 0.2):
    """Poll ``predicate`` until it returns something true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    queue = slurm("squeue", "-o", "%i %j %T %r", check=False)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; squeue:\n{queue}")


class Launch:
    """``python -m vita.run -m hydra/launcher=slurm ...`` running in the background."""

    def __init__(self, args: list[str], name: str, root: Path) -> None:
        self.name, self.root = name, root
        self.job_name = f"vita-{name}"
        self.log = root.parent / f"{name}.launch.log"
        root.mkdir(parents=True, exist_ok=True)
        cmd = [PY, "-m", "vita.run", "-m", "hydra/launcher=slurm", f"name={name}", f"output_root={root}",
               "logging.progress_bar=false", *args]
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=vita_env(), stdout=out, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = JOB_TIMEOUT_S) -> None:
        """Wait for the launching command (it returns when all its jobs are done); fail on rc != 0."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            queue = slurm("squeue", "-o", "%i %j %T %r", check=False)
            self.cancel()
            raise AssertionError(f"{self.name}: not done after {timeout}s; squeue:\n{queue}\n{self.tail()}") from None
        assert self.proc.returncode == 0, f"{self.name}: launcher rc {self.proc.returncode}\n{self.tail()}"

    def cancel(self) -> None:
        slurm("scancel", "-n", self.job_name, check=False)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def job_id(self, timeout: float = 60) -> str:
        return wait_until(f"job {self.job_name} in the queue", lambda: (job_ids(self.job_name) or [None])[0], timeout)

    def run_dirs(self) -> list[Path]:
        return [p.parent for p in live_rglob(self.root / self.name, "vita_config.json")]

    def tail(self, n: int = 3000) -> str:
        """The launcher's output and every job log, last characters of each."""
        parts = [f"--- {self.log.name}\n{self.log.read_text(errors='replace')[-n:]}"]
        for f in sorted((self.root / self.name).rglob(".submitit/*/*_log.*")):
            parts.append(f"--- {f.name}\n{f.read_text(errors='replace')[-n:]}")
        return "\n".join(parts)

    def job_logs(self) -> str:
        return "\n".join(f.read_text(errors="replace") for f in sorted((self.root / self.name).rglob(".submitit/*/*_log.*")))


def wait_job_state(job_id: str, state: str, timeout: float = 60) -> str:
    """Wait until SLURM reports ``state`` for the job (the launcher returns once results exist,
    a moment before the job itself ends)."""
    return wait_until(f"job {job_id} to be {state}", lambda: job_field(job_id, "JobState") == state and state, timeout)
