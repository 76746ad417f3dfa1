"""Stop signals in one process (no cluster): recorded, agreed, handed over, handlers restored."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from vita.engine import preemption
from vita.engine.preemption import WARN_SIGNAL, StopSignals


@pytest.fixture
def stop():
    s = StopSignals()
    yield s
    s.close()


def test_nothing_requested_without_a_signal(stop):
    assert stop.requested() == 0


def test_a_signal_is_recorded_not_acted_on(stop):
    os.kill(os.getpid(), signal.SIGTERM)  # would end the test process without the handler
    assert stop.requested() == signal.SIGTERM


def test_the_time_limit_warning_wins_over_sigterm(stop):
    os.kill(os.getpid(), WARN_SIGNAL)
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested() == WARN_SIGNAL


def test_close_restores_the_previous_handlers():
    seen = []
    before = signal.signal(WARN_SIGNAL, lambda s, f: seen.append(s))
    try:
        s = StopSignals()
        s.close()
        os.kill(os.getpid(), WARN_SIGNAL)
        assert seen == [WARN_SIGNAL]
    finally:
        signal.signal(WARN_SIGNAL, before)


def test_hand_over_calls_submitits_handler_then_exits():
    calls = []

    def submitit_handler(signum, frame):  # like submitit's: requeue, then sys.exit
        calls.append(signum)
        raise SystemExit(-1)

    before = signal.signal(WARN_SIGNAL, submitit_handler)
    try:
        s = StopSignals()
        with pytest.raises(SystemExit) as exc:
            s.hand_over(WARN_SIGNAL, rank=0)
        assert exc.value.code == 128 + WARN_SIGNAL
        assert calls == [WARN_SIGNAL]
        assert signal.getsignal(WARN_SIGNAL) is submitit_handler
    finally:
        signal.signal(WARN_SIGNAL, before)


def test_hand_over_under_plain_srun_runs_scontrol_requeue(monkeypatch):
    ran = []
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setattr(preemption.subprocess, "run",
                        lambda cmd, **kw: ran.append(cmd) or subprocess.CompletedProcess(cmd, 0, "", ""))
    s = StopSignals()
    with pytest.raises(SystemExit):
        s.hand_over(WARN_SIGNAL, rank=0)
    assert ran == [["scontrol", "requeue", "4242"]]


def test_only_rank_0_requeues_and_sigterm_never_does(monkeypatch):
    ran = []
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setattr(preemption.subprocess, "run", lambda cmd, **kw: ran.append(cmd))
    for signum, rank in ((WARN_SIGNAL, 1), (signal.SIGTERM, 0)):
        with pytest.raises(SystemExit) as exc:
            StopSignals().hand_over(signum, rank=rank)
        assert exc.value.code == 128 + signum
    assert ran == []
