"""Parameter groups (a learning rate per module group, no decay on biases and norms) and LR schedules."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from vita.errors import ConfigError
from vita.model.params import ndim


def _no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, norm weights and other 1-D parameters get no weight decay."""
    lname = name.lower()
    return ndim(param) < 2 or lname.endswith(".bias") or "norm" in lname


def param_groups(
    module_groups: dict[str, nn.Module],
    group_lrs: dict[str, float],
    weight_decay: float,
) -> list[dict]:
    """Optimizer parameter groups: per module group, one with decay and one without.

    Args:
        module_groups: name -> module (``OmniModel.module_groups()``).
        group_lrs: name -> learning rate for every group that trains.
        weight_decay: AdamW decay for matrices; biases and norms get 0.

    Returns:
        torch param-group dicts carrying ``name`` and ``lr``; frozen params are left out.
    """
    groups: list[dict] = []
    seen: set[int] = set()
    for gname, module in module_groups.items():
        decay, no_decay = [], []
        for pname, p in module.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if _no_decay(pname, p) else decay).append(p)
        if (decay or no_decay) and gname not in group_lrs:
            raise ConfigError(f"module group '{gname}' has trainable parameters but no learning rate")
        for suffix, params, wd in (("decay", decay, weight_decay), ("no_decay", no_decay, 0.0)):
            if params:
                groups.append({"name": f"{gname}.{suffix}", "params": params, "lr": group_lrs[gname], "weight_decay": wd})
    if not groups:
        raise ConfigError("nothing to train: every module group is frozen (check stage.groups)")
    return groups


def lr_lambda(kind: str, total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """Multiplier of each group's peak lr at a step: linear warmup, then cosine/linear decay or constant."""
    total = max(total_steps, 1)

    def fn(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
        if kind == "cosine":
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        elif kind == "linear":
            decay = 1.0 - progress
        else:
            raise ConfigError(f"optim.scheduler={kind!r}; valid options: cosine, linear, constant")
        return min_ratio + (1.0 - min_ratio) * decay

    return fn


def make_scheduler_factory(kind: str, total_steps: int, warmup_steps: int, min_ratio: float):
    """A callable ``optimizer -> LambdaLR`` that DeepSpeed calls after building its optimizer."""
    fn = lr_lambda(kind, total_steps, warmup_steps, min_ratio)

    def factory(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)

    return factory


def warmup_steps(cfg_optim, total_steps: int) -> int:
    if cfg_optim.warmup_steps > 0:
        return cfg_optim.warmup_steps
    return int(round(cfg_optim.warmup_ratio * total_steps))
