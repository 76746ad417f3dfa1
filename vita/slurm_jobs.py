"""Watching submitted SLURM jobs until each has a result, or has failed or gone, without relying on ``sacct``.

submitit learns a job's state from ``sacct``; on a cluster whose accounting is disabled that always fails, so
a job that died without writing its result pickle (a ``sys.exit`` at start, an OOM kill, ``scancel``) was
waited for forever. Here a job is done when every task's result pickle exists; while it has none, ``squeue``
says whether it is still queued or running, and ``scontrol show job`` gives the end state and exit code of one
that has left the queue. A job that has left the queue without a result is failed after a short grace period
(result files may appear late on network file systems), with the last lines of its own log.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
          "SUSPENDED", "STAGE_OUT", "SIGNALING"}
GRACE_S = 20.0  # a job gone from the queue may write its result this much later (slow file systems)
END_GRACE_S = 4.0  # the same for a job whose end state scontrol reports
TAIL_LINES = 8
SILENT_S = 600.0  # a controller that answers no squeue for this long ends the wait

LOCAL_CLUSTER_HINT = ("start the local one with `bash launch/local-slurm/start.sh`, or point SLURM_CONF at your "
                      "cluster's slurm.conf and set slurm.partition/slurm.account in conf/local/default.yaml "
                      "(see conf/local/example.yaml)")


def expose_launcher_plugin() -> None:
    """Let Hydra's plugin scan find ``hydra_plugins/vita_launcher`` (``hydra/launcher=slurm``) however vita is
    installed: an editable install hides it behind an import hook that ``pkgutil`` cannot list."""
    here = Path(__file__).resolve().parent.parent / "hydra_plugins"
    try:
        import hydra_plugins
    except ImportError:
        return
    if (here / "vita_launcher").is_dir() and str(here) not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(str(here))


def cluster_problem(timeout: float = 20.0) -> str | None:
    """One line saying why no SLURM cluster can take jobs from here (and how to get one), or None."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return f"no SLURM client (sbatch, sinfo) on this machine; {LOCAL_CLUSTER_HINT}"
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():
        return f"no SLURM cluster: SLURM_CONF={conf} does not exist; {LOCAL_CLUSTER_HINT}"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"no SLURM cluster answered within {timeout:.0f}s (sinfo); {LOCAL_CLUSTER_HINT}"
    if proc.returncode != 0:
        why = next((ln.strip() for ln in proc.stderr.splitlines() if ln.strip()), f"rc {proc.returncode}")
        return f"no SLURM cluster reachable ({why}); {LOCAL_CLUSTER_HINT}"
    return None


def _run(cmd: list[str]) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def queue_states(job_ids: list[str]) -> dict[str, str] | None:
    """``job id -> state`` (``PENDING``, ``RUNNING`` ...) of those of ``job_ids`` still in the queue, from one
    ``squeue`` call (array elements one by one); None if the controller did not answer."""
    out = _run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(job_ids)])
    if out is None:  # squeue -j fails when every id is unknown to it: gone, if the controller answers at all
        return None if _run(["sinfo", "-h", "-o", "%P"]) is None else {}
    return dict(line.split(None, 1) for line in out.splitlines() if len(line.split(None, 1)) == 2)


def end_state(job_id: str) -> tuple[str, str]:
    """``(JobState, ExitCode)`` of a job from ``scontrol show job`` (kept for MinJobAge after the end), or
    ``("gone", "?")`` once the controller has forgotten it."""
    out = _run(["scontrol", "show", "job", job_id]) or ""
    fields = dict(tok.split("=", 1) for tok in out.split() if "=" in tok)
    return fields.get("JobState", "gone"), fields.get("ExitCode", "?")


def log_tail(paths: list[Path], n: int = TAIL_LINES) -> str:
    """The last ``n`` non-empty lines of the first of ``paths`` that has any, prefixed with ``|``."""
    for p in paths:
        try:
            lines = [ln for ln in p.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            continue
        errors = [ln for ln in lines if ln.startswith("error:")]
        if errors:  # vita's own one-line error says it all
            return "\n".join(f"  | {ln}" for ln in errors[-1:])
        if lines:
            return "\n".join(f"  | {ln}" for ln in lines[-n:])
    return "  | (the job wrote no log)"


@dataclass
class Outcome:
    """How one submitted job ended: ``ok`` with its result, or failed with a message."""

    job_id: str
    ok: bool
    result: object = None
    message: str = ""


def _result_pickles(job) -> list[Path]:
    return [job.task(k).paths.result_pickle for k in range(job.num_tasks)]


def _logs(job) -> list[Path]:
    return [job.task(k).paths.stderr for k in range(job.num_tasks)] + [job.paths.stdout]


def _read_result(job) -> Outcome:
    from submitit.core.utils import pickle_load

    outcome, value = pickle_load(job.task(0).paths.result_pickle)
    if outcome == "success":
        return Outcome(job.job_id, True, value)
    last = "\n".join(f"  | {ln}" for ln in str(value).strip().splitlines()[-TAIL_LINES:])
    return Outcome(job.job_id, False, message=f"SLURM job {job.job_id} raised:\n{last}\n  log: {job.paths.stderr}")


def wait_for_jobs(jobs: list, poll_s: float = 2.0, grace_s: float = GRACE_S, on_wait=None,
                  silent_s: float = SILENT_S) -> list[Outcome]:
    """Wait until every submitit ``job`` has its results or has failed or disappeared (or the controller has not
    answered for ``silent_s``); returns one :class:`Outcome` per job, in order. ``on_wait(job_id, state)`` is
    called when a job's queue state changes."""
    outcomes: dict[str, Outcome] = {}
    silent_since: float | None = None
    gone_since: dict[str, float] = {}
    seen: dict[str, str] = {}
    while len(outcomes) < len(jobs):
        waiting = []
        for job in jobs:
            if job.job_id not in outcomes and all(p.exists() for p in _result_pickles(job)):
                outcomes[job.job_id] = _read_result(job)
            elif job.job_id not in outcomes:
                waiting.append(job)
        states = queue_states([job.job_id for job in waiting]) if waiting else {}
        if states is None:  # controller not answering: keep waiting a while, it may come back
            silent_since = silent_since or time.monotonic()
            if time.monotonic() - silent_since > silent_s:
                for job in waiting:
                    outcomes[job.job_id] = Outcome(job.job_id, False, message=(
                        f"the SLURM controller has not answered for {silent_s / 60:.0f} min; SLURM job "
                        f"{job.job_id} may still run (check squeue); its log: {job.task(0).paths.stderr}"))
            waiting, states = [], {}
        else:
            silent_since = None
        for job in waiting:
            jid = job.job_id
            state = states.get(jid, "")
            if state and state.split()[0] in ACTIVE:
                gone_since.pop(jid, None)
                if on_wait is not None and seen.get(jid) != state:
                    on_wait(jid, state)
                seen[jid] = state
                continue
            first = gone_since.setdefault(jid, time.monotonic())
            st, code = end_state(jid)
            if st in ACTIVE:  # requeued meanwhile
                gone_since.pop(jid, None)
                continue
            # an end state SLURM reports: the result would have been written before the job's process ended
            if time.monotonic() - first < (grace_s if st == "gone" else min(grace_s, END_GRACE_S)):
                continue
            how = "is no longer known to SLURM" if st == "gone" else f"ended {st} (exit code {code})"
            outcomes[jid] = Outcome(jid, False, message=(
                f"SLURM job {jid} {how} without a result; its last log lines:\n{log_tail(_logs(job))}\n"
                f"  log: {job.task(0).paths.stderr}"))
        if len(outcomes) < len(jobs):
            time.sleep(poll_s)
    return [outcomes[j.job_id] for j in jobs]
