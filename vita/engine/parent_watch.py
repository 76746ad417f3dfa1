"""Workers that outlive their launcher stop: under torchrun each rank watches its parent (the torchrun agent).

``kill -KILL`` of torchrun leaves its workers running, re-parented to PID 1, still writing the run dir.
:func:`watch_launcher` starts a daemon thread that polls ``os.getppid()``; once the parent has changed, it
sends this process SIGTERM, which :class:`vita.engine.preemption.StopSignals` turns into a stop at the end
of the current step (all ranks agree on it), with a checkpoint; then the rank exits and its run dir lock
(:mod:`vita.engine.run_lock`) is released. A rerun meanwhile is refused by that lock.
(``prctl(PR_SET_PDEATHSIG)`` is not used: it fires when the *thread* that started the worker ends.)
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

log = logging.getLogger("vita")
_started: set[int] = set()


def watch_launcher(poll_s: float = 0.25) -> bool:
    """Under torchrun (``TORCHELASTIC_RUN_ID`` set), watch the parent once per process; returns whether it does."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or os.getpid() in _started:
        return False
    parent = os.getppid()
    _started.add(os.getpid())

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        log.warning("rank %s: its launcher (torchrun, pid %d) is gone; stopping after this step with a checkpoint",
                    os.environ.get("RANK", "?"), parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="vita-launcher-watch", daemon=True).start()
    return True
