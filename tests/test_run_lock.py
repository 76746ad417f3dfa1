"""One writer per run dir (vita/engine/run_lock.py), in-process: a held lock refuses a second taker naming the
holder; a dead holder's lock is taken over with a line; a clean release leaves no holder; without flock the
lock falls back to host and PID. (Across processes: tests/test_train_resume.py.)"""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import sys

import pytest

from vita.engine import run_lock
from vita.engine.run_lock import LOCK_FILE, RunDirBusy, RunLock


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_held_lock_refuses_a_second_taker_naming_the_holder(tmp_path):
    first = RunLock(tmp_path / "run")
    first.acquire()
    try:
        with pytest.raises(RunDirBusy, match=rf"is in use by pid \d+ on host {socket.gethostname()}, since "):
            RunLock(tmp_path / "run").acquire()  # another open file description: flock refuses it
    finally:
        first.release()
    assert (tmp_path / "run" / LOCK_FILE).read_text() == ""  # a clean end names no holder
    again = RunLock(tmp_path / "run")
    again.acquire()
    again.release()


def test_a_dead_holders_lock_is_taken_over_with_a_line(tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    pid = _dead_pid()
    (run / LOCK_FILE).write_text(f"host={socket.gethostname()} pid={pid} since=2026-01-01T00:00:00Z slurm_job=7\n")
    lock = RunLock(run)
    with caplog.at_level(logging.WARNING, logger="vita"):
        lock.acquire()
    try:
        assert f"taking over the lock of pid {pid} on host {socket.gethostname()} (SLURM job 7)" in caplog.text
        assert f"pid={os.getpid()}" in (run / LOCK_FILE).read_text()
    finally:
        lock.release()


def test_without_flock_host_and_pid_decide(tmp_path, monkeypatch):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_lock.fcntl, "flock", no_flock)
    run = tmp_path / "run"
    run.mkdir()
    me = socket.gethostname()
    (run / LOCK_FILE).write_text(f"host={me} pid={os.getpid()} since=x\n")  # alive on this host
    with pytest.raises(RunDirBusy, match="this file system has no flock"):
        RunLock(run).acquire()
    (run / LOCK_FILE).write_text("host=another-node pid=1 since=x\n")  # elsewhere: trusted
    with pytest.raises(RunDirBusy, match="pid 1 on host another-node"):
        RunLock(run).acquire()
    (run / LOCK_FILE).write_text(f"host={me} pid={_dead_pid()} since=x\n")  # dead on this host: taken over
    lock = RunLock(run)
    lock.acquire()
    lock.release()
