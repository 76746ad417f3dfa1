"""Collectives over the ranks of a job, each a no-op in a world of one (or before ``init_distributed``).

They sit below every layer that uses them (``engine``, ``infer``, ``eval``): evaluation and generation
agree across ranks without importing the training engine. Starting and closing the process group is
:mod:`vita.engine.distributed`'s job.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def broadcast_object(obj, src: int = 0):
    """Send a picklable object from ``src`` to every rank."""
    if _world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _all_reduce(value: float | int, op) -> float:
    if _world() == 1:
        return value
    dev = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    t = torch.tensor([float(value)], dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=op)
    return t.item()


def all_reduce_sum(value: float | int) -> float:
    """Sum a number over ranks (on CPU tensors for gloo)."""
    return _all_reduce(value, dist.ReduceOp.SUM)


def all_reduce_max(value: float | int) -> float:
    """The largest value over ranks."""
    return _all_reduce(value, dist.ReduceOp.MAX)


def barrier() -> None:
    """Wait for every rank (no-op in a world of one)."""
    if _world() > 1:
        dist.barrier()
