"""Model zoo: the composite OmniModel and its registries (backbones, vision towers, audio encoders, projectors)."""

from __future__ import annotations

from vita.model.builder import build_model
from vita.model.omni import OmniModel
from vita.model.tokens import ensure_media_tokens
from vita.spec import DataSpec

__all__ = ["DataSpec", "OmniModel", "build_model", "ensure_media_tokens"]
