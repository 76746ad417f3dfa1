"""Exports: the trained model as plain Hugging Face artefacts (``AutoModelForCausalLM`` loads the LLM)."""

from __future__ import annotations

import json
from pathlib import Path

import deepspeed
import torch
from torch import nn


def full_state_dict(module: nn.Module, zero_stage: int, rank: int) -> dict[str, torch.Tensor] | None:
    """The whole state dict on rank 0 (gathered under ZeRO-3), as contiguous CPU tensors; None elsewhere."""
    params = list(module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=zero_stage == 3):
        if rank != 0:
            return None
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


def export_model(model: nn.Module, tokenizer, out: Path, zero_stage: int, rank: int, meta: dict) -> Path | None:
    """Write ``out/`` with the LLM in HF format (safetensors), the tokenizer, ``<group>.safetensors`` for each
    encoder / projector / head, and ``vita_export.json``."""
    sd = full_state_dict(model, zero_stage, rank)
    if rank != 0:
        return None
    out.mkdir(parents=True, exist_ok=True)
    llm_sd = {k.removeprefix("llm."): v for k, v in sd.items() if k.startswith("llm.")}
    model.llm.save_pretrained(out, state_dict=llm_sd, safe_serialization=True)
    tokenizer.save_pretrained(out)
    # encoders, projectors and heads: one safetensors file per module group, keys relative to it
    from safetensors.torch import save_file

    groups = model.module_groups() if hasattr(model, "module_groups") else {}
    prefixes = {name: f"{attr}." for name, attr in (("vision_tower", "vision_tower"), ("vision_projector", "vision_projector"),
                ("audio_encoder", "audio_encoder"), ("audio_projector", "audio_projector"), ("heads", "state_head"))}
    for name in groups:
        if name in prefixes:
            pre = prefixes[name]
            part = {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}
            if part:
                save_file(part, str(out / f"{name}.safetensors"), metadata={"format": "pt"})
    (out / "vita_export.json").write_text(json.dumps(meta, indent=1))
    return out
