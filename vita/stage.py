"""Apply a stage to a model: freeze or train each module group, and give each its learning rate."""

from __future__ import annotations

import logging

from torch import nn

from vita.errors import ConfigError

log = logging.getLogger("vita")


def apply_stage(model: nn.Module, stage_cfg, base_lr: float) -> dict[str, float]:
    """Set ``requires_grad`` per module group; return ``group -> lr`` for the trainable groups.

    Groups the stage does not list train fully at ``base_lr``. LoRA arrives with the stages work;
    asking for it now is a clear error rather than a silent full fine-tune.
    """
    groups = model.module_groups()
    unknown = set(stage_cfg.groups) - set(groups)
    if unknown:
        raise ConfigError(
            f"stage '{stage_cfg.name}' names module group(s) {sorted(unknown)} that this model lacks; "
            f"its groups: {', '.join(groups)}"
        )
    lrs: dict[str, float] = {}
    for name, module in groups.items():
        spec = stage_cfg.groups.get(name)
        mode = spec.mode if spec is not None else "full"
        if mode == "lora":
            raise ConfigError(f"stage.groups.{name}.mode=lora is not available yet; use full or frozen")
        module.requires_grad_(mode == "full")
        if mode == "full":
            lrs[name] = spec.lr if spec is not None and spec.lr is not None else base_lr
    return lrs


def trainable_table(model: nn.Module, lrs: dict[str, float]) -> str:
    """A table of parameters per module group: trainable / total and learning rate."""
    rows = [("group", "trainable", "total", "lr")]
    for name, module in model.module_groups().items():
        total = sum(p.numel() for p in module.parameters())
        train = sum(p.numel() for p in module.parameters() if p.requires_grad)
        rows.append((name, f"{train:,}", f"{total:,}", f"{lrs[name]:.2e}" if name in lrs else "frozen"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
