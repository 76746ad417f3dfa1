"""Apply a stage to a model: per module group, freeze it, train it fully or train LoRA on it."""

from __future__ import annotations

import logging

from torch import nn

from vita.config import GroupConfig
from vita.model.lora import attach_lora
from vita.model.params import numel

log = logging.getLogger("vita")


def apply_stage(model: nn.Module, stage_cfg, base_lr: float) -> dict[str, float]:
    """Set what trains per module group; return ``group -> lr`` for the groups that train.

    Groups left at the default train fully at ``base_lr``. ``lora`` freezes the group and
    injects LoRA layers into it alone (``stage.groups.<g>.lora``). The names of the wrapped
    layers are kept in ``model.lora_wrapped[group]``.
    """
    groups = model.module_groups()
    default = GroupConfig()
    absent = sorted(n for n, g in stage_cfg.groups.items() if n not in groups and
                    (g.mode != default.mode or g.lr is not None))
    if absent:  # one stage file serves models with and without, e.g., a user-state head
        log.info("stage '%s' sets %s, which this model lacks (its groups: %s); ignored", stage_cfg.name,
                 ", ".join(absent), ", ".join(groups))
    lrs: dict[str, float] = {}
    model.lora_wrapped = {}
    for name, module in groups.items():
        spec = stage_cfg.groups.get(name)
        mode = spec.mode if spec is not None else "full"
        if mode == "lora":
            model.lora_wrapped[name] = attach_lora(module, spec.lora, name)
        else:
            module.requires_grad_(mode == "full")
        if mode != "frozen":
            lrs[name] = spec.lr if spec is not None and spec.lr is not None else base_lr
    return lrs


def lora_groups(stage_cfg) -> dict:
    """``group -> lora settings`` for the groups this stage trains with LoRA."""
    return {name: g.lora for name, g in stage_cfg.groups.items() if g.mode == "lora"}


def trainable_table(model: nn.Module, lrs: dict[str, float]) -> str:
    """A table of parameters per module group: trainable / total, mode and learning rate."""
    wrapped = getattr(model, "lora_wrapped", {})
    rows = [("group", "mode", "trainable", "total", "lr")]
    for name, module in model.module_groups().items():
        total = sum(numel(p) for p in module.parameters())  # ZeRO-3 partitions: their whole size
        train = sum(numel(p) for p in module.parameters() if p.requires_grad)
        mode = "lora" if name in wrapped else "full" if name in lrs else "frozen"
        rows.append((name, mode, f"{train:,}", f"{total:,}", f"{lrs[name]:.2e}" if name in lrs else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
