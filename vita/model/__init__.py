"""Model zoo: the composite OmniModel and its registries."""

from __future__ import annotations

from vita.model.backbones import build_backbone
from vita.model.omni import OmniModel


def build_model(model_cfg, vocab_size: int | None = None) -> OmniModel:
    """Build the OmniModel described by ``cfg.model``."""
    return OmniModel(build_backbone(model_cfg, vocab_size=vocab_size))


__all__ = ["OmniModel", "build_model"]
