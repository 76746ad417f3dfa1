"""``hydra/launcher=slurm``: hydra-submitit-launcher's SLURM launcher, with a wait that always ends (Hydra loads
launcher plugins only from the ``hydra_plugins`` namespace; the watching itself is :mod:`vita.slurm_jobs`).

Differences from the plugin's own ``launch``:

* no cluster (no ``sbatch``, or ``sinfo`` fails) -> one line saying so and how to get one, exit 2;
* the wait (:func:`vita.slurm_jobs.wait_for_jobs`) reads the jobs' result files and ``squeue``/``scontrol``,
  not ``sacct``: a job that fails or disappears ends the command with its own error (last log lines and the
  log path) and exit 1, also where SLURM accounting is disabled;
* on success it prints, per job, where its run dir and its logs are.

Jobs run the plugin's own ``__call__`` (``run_job`` on the sweep config) and ``checkpoint`` (requeue).
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _PluginSlurmLauncher

from vita.slurm_jobs import cluster_problem, wait_for_jobs

log = logging.getLogger("vita")
INIT_KEYS = ("submitit_folder", "max_num_timeout")  # AutoExecutor(...) arguments; the rest are job parameters


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _run_dir(ret: object) -> str:
    from omegaconf import OmegaConf

    hydra_cfg = getattr(ret, "hydra_cfg", None)
    found = OmegaConf.select(hydra_cfg, "hydra.runtime.output_dir") if hydra_cfg is not None else None
    return str(found or getattr(ret, "working_dir", None) or "?")


class SlurmLauncher(_PluginSlurmLauncher):
    """Submits each job of a ``-m`` run as one element of a SLURM job array and waits for all of them."""

    def _executor(self):
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
        from omegaconf import OmegaConf

        executor = submitit.AutoExecutor(cluster="slurm", folder=self.params["submitit_folder"],
                                         slurm_max_num_timeout=self.params["max_num_timeout"])
        generic = set(OmegaConf.structured(BaseQueueConf).keys())  # timeout_min, nodes, name ... unprefixed
        executor.update_parameters(**{k if k in generic else f"slurm_{k}": v
                                      for k, v in self.params.items() if k not in INIT_KEYS})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.singleton import Singleton
        from hydra.core.utils import filter_overrides
        from submitit.core.utils import FailedJobError

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        problem = cluster_problem()
        if problem:
            _say(f"error: {problem}")
            if sweep_dir.is_dir() and {p.name for p in sweep_dir.iterdir()} <= {"multirun.yaml"}:
                shutil.rmtree(sweep_dir, ignore_errors=True)  # Hydra's record of a sweep that never started
            sys.exit(2)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        executor = self._executor()
        calls = []
        for k, overrides in enumerate(job_overrides):
            idx = initial_job_idx + k
            log.info("#%d : %s", idx, " ".join(filter_overrides(overrides)))
            calls.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        try:
            jobs = executor.map_array(self, *zip(*calls))
        except FailedJobError as e:  # sbatch refused the job
            reason = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "sbatch failed")
            _say(f"error: SLURM did not accept the job: {reason}")
            sys.exit(2)
        for job in jobs:
            _say(f"submitted SLURM job {job.job_id} (logs: {job.paths.stdout.parent}); waiting for it to end")
        outcomes = wait_for_jobs(jobs, on_wait=lambda jid, state: _say(f"SLURM job {jid}: {state}"))
        failed = [o for o in outcomes if not o.ok]
        job_of = {job.job_id: job for job in jobs}
        for o in outcomes:
            if o.ok and isinstance(o.result, JobReturn) and o.result.status == JobStatus.FAILED:
                o.ok = False
                err = o.result._return_value  # the task's exception (``return_value`` would raise it)
                o.message = (f"SLURM job {o.job_id} failed: {type(err).__name__}: {err}\n"
                             f"  log: {job_of[o.job_id].paths.stderr}")
                failed.append(o)
        for job, o in zip(jobs, outcomes):
            if o.ok:
                run_dir = _run_dir(o.result)
                _say(f"SLURM job {o.job_id} done: run dir {run_dir}\n  logs: {job.paths.stdout.parent}")
        if failed:
            for o in failed:
                _say(f"error: {o.message}")
            sys.exit(1)
        return [o.result for o in outcomes]
