"""Sizes of parameters that ZeRO-3 may have partitioned.

A parameter partitioned by ZeRO-3 holds an empty ``.data`` on every rank (``numel() == 0``, one
dimension) and its rank's slice in ``.ds_tensor``; its real size and shape are ``ds_numel`` and
``ds_shape``. Code that counts or inspects parameters (the trainable table, FLOPs, weight-decay
groups, the VITA importer) reads them through :func:`numel` and :func:`ndim`.
"""

from __future__ import annotations

import torch


def is_partitioned(p: torch.Tensor) -> bool:
    """A ZeRO-3 parameter (made by ``zero.Init`` or ``deepspeed.initialize``)."""
    return hasattr(p, "ds_id")


def numel(p: torch.Tensor) -> int:
    """Elements of the whole parameter, partitioned or not."""
    return int(p.ds_numel) if is_partitioned(p) else p.numel()


def ndim(p: torch.Tensor) -> int:
    """Dimensions of the whole parameter, partitioned or not."""
    return len(p.ds_shape) if is_partitioned(p) else p.ndim
