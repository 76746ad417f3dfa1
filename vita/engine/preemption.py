"""Stop at a step boundary when SLURM says the job will end: checkpoint, requeue, exit.

SLURM sends SIGUSR2 ``signal_delay_s`` seconds before a job's time limit (``--signal``, which
submitit sets from ``hydra.launcher.signal_delay_s``; ``SUBMITIT_PREEMPT_SIGNAL`` picks another
signal) and SIGTERM when it cancels, preempts or requeues a job. :class:`StopSignals` only
*records* them: the Trainer asks :meth:`StopSignals.requested` once per step (all ranks agree on
the answer), saves a checkpoint of that step and calls :meth:`StopSignals.hand_over`:

* after the warning signal, rank 0 requeues the job: under submitit by calling submitit's own
  handler (it pickles the same job again and runs ``scontrol requeue``), under plain sbatch/srun
  with ``scontrol requeue $SLURM_JOB_ID``;
* after SIGTERM nothing is requeued here (SLURM already did, or the job was cancelled);
* then every rank exits with ``128 + signal``.

The requeued job runs the same command in the same run dir, finds the checkpoint and resumes
exactly where the signal stopped it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from typing import NoReturn

from vita.engine.distributed import all_reduce_max, barrier

log = logging.getLogger("vita")

WARN_SIGNAL = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))
"""The signal SLURM sends before the time limit (submitit's choice: USR2)."""
STOP_SIGNALS = (WARN_SIGNAL, signal.SIGTERM)


class StopSignals:
    """Records the stop signals while training; the previous handlers come back on :meth:`close`."""

    def __init__(self) -> None:
        self.received = 0
        self._previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():  # signal.signal works only there
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)

    def _record(self, signum: int, frame) -> None:
        # The warning wins over SIGTERM: it is the one that asks for a requeue.
        if self.received != WARN_SIGNAL:
            self.received = signum

    def requested(self) -> int:
        """The stop signal any rank has received (0 if none); the same answer on every rank.

        One small all-reduce: ranks get a signal at slightly different moments, but all stop
        after the same step.
        """
        rank_order = (0, signal.SIGTERM, WARN_SIGNAL)  # the later, the stronger
        return rank_order[int(all_reduce_max(rank_order.index(self.received)))]

    def hand_over(self, signum: int, rank: int) -> NoReturn:
        """After the checkpoint: requeue (warning signal, rank 0), then every rank exits with ``128 + signum``."""
        previous = self._previous.get(signum)
        self.close()
        name = signal.Signals(signum).name
        if signum == WARN_SIGNAL and rank == 0:
            _requeue(previous, signum, name)
        elif rank == 0:
            log.warning("%s: checkpoint saved; exiting", name)
        barrier()  # nobody leaves before the requeue: `srun --kill-on-bad-exit` would stop rank 0
        raise SystemExit(128 + signum)

    def close(self) -> None:
        """Give the signals back to whoever handled them before."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}


def _requeue(previous, signum: int, name: str) -> None:
    if callable(previous):  # submitit's handler: pickles the same job again, runs scontrol requeue, exits
        log.warning("%s: checkpoint saved; submitit requeues the job", name)
        try:
            previous(signum, None)
        except SystemExit:
            pass
    elif os.environ.get("SLURM_JOB_ID"):  # plain sbatch + srun (needs --requeue or JobRequeue=1)
        job = os.environ["SLURM_JOB_ID"]
        log.warning("%s: checkpoint saved; requeueing SLURM job %s", name, job)
        proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            log.error("scontrol requeue %s failed (%s); submit the same command again to resume", job,
                      proc.stderr.strip())
    else:
        log.warning("%s: checkpoint saved; not under SLURM, so nothing requeues this run: run the same command "
                    "again to resume", name)
