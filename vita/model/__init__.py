"""Model zoo: the composite OmniModel and its registries."""

from __future__ import annotations

from pathlib import Path

import torch

from vita.model.backbones import build_backbone
from vita.model.omni import OmniModel


def build_model(model_cfg, vocab_size: int | None = None, work_dir: Path | None = None,
                compute_dtype: torch.dtype = torch.float32, gradient_checkpointing: bool = False) -> OmniModel:
    """Build the OmniModel described by ``cfg.model``.

    Args:
        model_cfg: ``cfg.model``.
        vocab_size: the tokenizer's size.
        work_dir: where a quantised random-init base is saved (``model.quantization`` only).
        compute_dtype: compute dtype of k-bit layers.
        gradient_checkpointing: prepared together with k-bit training.
    """
    if model_cfg.quantization:
        from vita.model.quant import load_quantized_llm

        if work_dir is None:
            raise ValueError("build_model needs work_dir when model.quantization is set")
        return OmniModel(load_quantized_llm(model_cfg, vocab_size, work_dir, compute_dtype, gradient_checkpointing))
    return OmniModel(build_backbone(model_cfg, vocab_size=vocab_size))


__all__ = ["OmniModel", "build_model"]
