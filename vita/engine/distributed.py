"""Process-group set-up from whatever launched us: torchrun, the deepspeed launcher, SLURM, or nothing.

A bare ``python -m vita.run`` becomes a world of one on a free local port. Under SLURM
(``srun``/submitit, no torchrun), ranks come from ``SLURM_PROCID``/``SLURM_LOCALID``, the master
is the first host of ``SLURM_JOB_NODELIST`` and the port is derived from the job id.
"""

from __future__ import annotations

import atexit
import datetime
import os
import re
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vita.collectives import all_reduce_max, all_reduce_sum, barrier, broadcast_object  # noqa: F401  (re-exported)
from vita.engine.ds_ops import no_build_prints, prepare_deepspeed_ops


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    launcher: str
    """``torchrun`` (also the deepspeed launcher), ``slurm`` or ``single``."""
    owns_group: bool
    """True when we created the process group and should destroy it."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list: ``node[03-05,9],gpu1`` -> ``node03``."""
    m = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if not m:
        return nodelist
    prefix, _, ranges = m.groups()
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return f"{prefix}{first}"


def slurm_port(job_id: str) -> int:
    """A port in 15000-19999 derived from the job id, so all tasks of a job agree on it."""
    digits = re.sub(r"\D", "", job_id) or "0"
    return 15000 + int(digits[-4:]) % 5000


def _detect_env() -> tuple[str, dict[str, str]]:
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return "torchrun", {}
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and int(env["SLURM_NTASKS"]) > 1:
        return "slurm", {
            "RANK": env["SLURM_PROCID"],
            "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            "WORLD_SIZE": env["SLURM_NTASKS"],
            "MASTER_ADDR": env.get("MASTER_ADDR") or first_slurm_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1")),
            "MASTER_PORT": env.get("MASTER_PORT") or str(slurm_port(env.get("SLURM_JOB_ID", "0"))),
        }
    return "single", {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
    }


def init_distributed(timeout_min: int = 30) -> DistInfo:
    """Initialise (or join) the default process group and return who we are.

    Uses gloo on CPU and NCCL on GPUs, through ``deepspeed.init_distributed`` so that
    DeepSpeed's communication layer is set up too.
    """
    import deepspeed

    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size(), "existing", False)
    launcher, extra = _detect_env()
    os.environ.update(extra)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    prepare_deepspeed_ops(int(os.environ.get("RANK", 0)) == 0)  # its shm op: built once per venv, said so
    with no_build_prints():
        deepspeed.init_distributed(
            dist_backend=backend,
            auto_mpi_discovery=False,
            timeout=datetime.timedelta(minutes=timeout_min),
            verbose=False,
        )
    if launcher == "torchrun":
        # All jobs of a multirun share the group torchrun's rendezvous made; destroy it at exit.
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return DistInfo(dist.get_rank(), local_rank, dist.get_world_size(), launcher, launcher != "torchrun")


def close_distributed(info: DistInfo | None) -> None:
    """Destroy the process group if we created it (a bare run, or the last job of a multirun)."""
    if info is not None and info.owns_group and dist.is_initialized():
        dist.destroy_process_group()
        _forget_deepspeed_groups()
        if info.launcher == "single":
            for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
                os.environ.pop(k, None)


def end_process_group() -> None:
    """Destroy this process's group and DeepSpeed's cached groups, and forget the single-process rendezvous
    variables: a later in-process run (a test, a bench arm) starts a fresh group that DeepSpeed sees as new."""
    if dist.is_initialized():
        dist.destroy_process_group()
    _forget_deepspeed_groups()
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(k, None)


def _forget_deepspeed_groups() -> None:
    """DeepSpeed caches process groups in module globals; a later job in this process needs fresh ones."""
    import deepspeed.comm.comm as ds_comm
    from deepspeed.utils import groups

    for name, value in list(vars(groups).items()):
        if name.startswith("_") and name.endswith("_GROUP") or name.endswith("_GROUP_RANKS"):
            setattr(groups, name, {} if isinstance(value, dict) else None)
    ds_comm.cdb = None
