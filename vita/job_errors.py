"""How a training job that stops on a :class:`~vita.errors.VitaError` reports it: once.

The console gets one ``error: ...`` line (stderr); the job's log file in the run dir gets the same message
(not the console a second time). A run dir that holds nothing but what Hydra wrote before the job started
(``.hydra/``, the log file, an empty run dir lock) is removed: a bad config or an unknown backbone leaves no
empty run behind. Only rank 0 removes it.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

HYDRA_ONLY = {".hydra", ".vita.lock"}


def unused_run_dir(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds only Hydra's start-of-job files (nothing vita wrote)."""
    try:
        entries = list(run_dir.iterdir())
    except OSError:
        return False
    return all(e.name in HYDRA_ONLY or (e.is_file() and e.suffix == ".log") for e in entries)


def _run_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # not under Hydra
        return None


def report_job_error(err: Exception, logger: logging.Logger) -> None:
    """One ``error:`` line on stderr; the message in the job's log files; an unused run dir removed (rank 0)."""
    from vita.console import process_rank

    print(f"error: {err}", file=sys.stderr, flush=True)
    run_dir = _run_dir()
    if run_dir is not None and process_rank() == 0 and unused_run_dir(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "%s", (err,), None)
    for h in logging.getLogger().handlers + logger.handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(record)
