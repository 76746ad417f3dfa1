"""Exports: the trained model as plain Hugging Face / PEFT artefacts.

``final/`` holds the LLM in HF format (``AutoModelForCausalLM.from_pretrained(final)``) and the
tokenizer. For a group trained with LoRA, ``final/`` holds its *base* weights and
``final/adapters/<group>/`` the PEFT adapter (``PeftModel.from_pretrained(base, adapter)``);
``python -m vita.export`` merges an adapter into a full model. A quantised (QLoRA) LLM exports
only its adapter; its base is the folder named in ``vita_export.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import deepspeed
import torch
from torch import nn

from vita.model.lora import save_adapter, split_state_dict


def full_state_dict(module: nn.Module, zero_stage: int, rank: int) -> dict[str, torch.Tensor] | None:
    """The whole state dict on rank 0 (gathered under ZeRO-3), as contiguous CPU tensors; None elsewhere."""
    params = list(module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=zero_stage == 3):
        if rank != 0:
            return None
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


def export_model(model: nn.Module, tokenizer, out: Path, zero_stage: int, rank: int, meta: dict,
                 lora: dict | None = None) -> Path | None:
    """Write ``out/``: LLM (HF format), tokenizer, LoRA adapters per group, ``vita_export.json``.

    Args:
        lora: ``group -> lora settings`` for groups trained with LoRA (``vita.stage.lora_groups``).
    """
    sd = full_state_dict(model, zero_stage, rank)
    if rank != 0:
        return None
    lora = lora or {}
    out.mkdir(parents=True, exist_ok=True)
    llm_sd = {k.removeprefix("llm."): v for k, v in sd.items() if k.startswith("llm.")}
    base_model = getattr(model.llm.config, "vita_base_model", None)
    if "llm" in lora:
        llm_sd, adapter = split_state_dict(llm_sd, lora["llm"].bias)
        save_adapter(adapter, lora["llm"], out / "adapters" / "llm", base_model or str(out), "CAUSAL_LM")
        meta = {**meta, "adapters": {"llm": "adapters/llm"}}
    if base_model:  # k-bit weights are not re-exported: the base is the original folder
        meta = {**meta, "base_model": base_model}
        model.llm.config.save_pretrained(out)
    else:
        model.llm.save_pretrained(out, state_dict=llm_sd, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "vita_export.json").write_text(json.dumps(meta, indent=1))
    return out
