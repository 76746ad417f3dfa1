"""One writer per run dir: rank 0 of the job that trains in a run dir holds ``<run_dir>/.vita.lock``.

The lock is an ``flock`` on that file, so the kernel releases it when the holder dies, however it dies
(SIGKILL, OOM, a node reboot); the file's text names the holder (host, PID, start time) for the message
that a second job gets. A second ``vita.run`` on a held run dir stops at once with one line naming the
holder. A lock left by a dead holder (its text is still there, its ``flock`` is gone) is taken over with a
line saying so. File systems without ``flock`` (some Lustre mounts) fall back to the text alone: a holder
on this host is checked by its PID, one on another host is trusted until its line is deleted.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import time
from pathlib import Path

from vita.engine.distributed import DistInfo, broadcast_object
from vita.errors import VitaError

log = logging.getLogger("vita")
LOCK_FILE = ".vita.lock"
NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunDirBusy(VitaError):
    """Another live job trains in this run dir."""


def _me() -> dict:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": now,
            "slurm_job": os.environ.get("SLURM_JOB_ID", "")}


def _parse(text: str) -> dict:
    return dict(kv.split("=", 1) for kv in text.split() if "=" in kv)


def describe(holder: dict) -> str:
    """``pid 123 on host vm (SLURM job 7), since ...``."""
    job = f" (SLURM job {holder['slurm_job']})" if holder.get("slurm_job") else ""
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}{job}, since {holder.get('since', '?')}"


def _holder(fd: int) -> dict:
    return _parse(os.pread(fd, 4096, 0).decode(errors="replace"))


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """The lock of one run dir; :meth:`acquire` raises :class:`RunDirBusy`, :meth:`release` gives it back."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._busy(_holder(fd)) from None
            except OSError as e:
                if e.errno not in NO_FLOCK:
                    raise
                self._check_text_only(_holder(fd))
            previous = _holder(fd)  # read under the lock: a holder that ended cleanly left it empty
            if previous.get("pid"):  # its text is there but its flock is gone: the holder died
                log.warning("run dir %s: taking over the lock of %s, which is no longer running", self.run_dir,
                            describe(previous))
            text = " ".join(f"{k}={v}" for k, v in _me().items())
            os.ftruncate(fd, 0)
            os.pwrite(fd, (text + "\n").encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _busy(self, holder: dict) -> RunDirBusy:
        return RunDirBusy(f"run dir {self.run_dir} is in use by {describe(holder)} (lock {self.path}); wait for "
                          "that job to end or stop it, or use another name= for a new run")

    def _check_text_only(self, holder: dict) -> None:
        if not holder.get("pid"):
            return
        if holder.get("host") != socket.gethostname() or _pid_alive(holder["pid"]):
            err = self._busy(holder)
            raise RunDirBusy(f"{err} (this file system has no flock: if that job is gone, delete {self.path})")

    def release(self) -> None:
        """Empty the file (a clean end leaves no holder to report) and unlock it; the file stays, so that a
        job opening it meanwhile locks the same file."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def hold_run_dir(run_dir: Path, dist_info: DistInfo) -> RunLock | None:
    """Rank 0 takes the run dir's lock; every rank raises the same :class:`RunDirBusy` if it is held."""
    lock, err = None, None
    if dist_info.is_main:
        lock = RunLock(run_dir)
        try:
            lock.acquire()
        except RunDirBusy as e:
            lock, err = None, str(e)
    err = broadcast_object(err)
    if err:
        raise RunDirBusy(err)
    return lock
