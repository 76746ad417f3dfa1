"""LoRA per module group (through peft), confined to that group's module.

LoRA layers are injected into one group's module only (``peft.inject_adapter_in_model``), so a
stage that puts LoRA on the LLM never wraps an encoder's linear layers. Exports are plain PEFT
folders (``adapter_config.json`` + ``adapter_model.safetensors``) that ``PeftModel.from_pretrained``
loads onto the base model.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vita.errors import CheckpointError, ConfigError

PEFT_PREFIX = "base_model.model."


def peft_config(lora_cfg, task_type: str | None = None):
    """The peft ``LoraConfig`` for a group's ``lora`` settings."""
    if lora_cfg.bias not in ("none", "all", "lora_only"):
        raise ConfigError(f"lora.bias={lora_cfg.bias!r}; valid options: none, all, lora_only")
    targets = list(lora_cfg.target_modules)
    from peft import LoraConfig as PeftLoraConfig  # imported on use: peft pulls in bitsandbytes and torch._dynamo

    return PeftLoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        bias=lora_cfg.bias,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        task_type=task_type,
    )


def attach_lora(module: nn.Module, lora_cfg, group: str) -> list[str]:
    """Freeze ``module``, inject LoRA into its matching linear layers; returns the wrapped module names.

    Raises:
        ConfigError: no module of the group matches ``target_modules``.
    """
    module.requires_grad_(False)
    cfg = peft_config(lora_cfg)
    try:
        from peft import inject_adapter_in_model

        inject_adapter_in_model(cfg, module)
    except ValueError as e:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in module.named_modules() if isinstance(m, nn.Linear)})
        raise ConfigError(
            f"stage.groups.{group}.lora.target_modules={list(lora_cfg.target_modules)} matches nothing in '{group}' "
            f"({e}); its linear layers are named: {', '.join(names)}"
        ) from None
    wrapped = [n for n, m in module.named_modules() if hasattr(m, "lora_A")]
    if lora_cfg.init_from:
        load_adapter_weights(module, Path(lora_cfg.init_from))
    return wrapped


def _is_adapter_key(key: str, bias: str) -> bool:
    if "lora_" in key:
        return True
    return bias == "all" and key.endswith(".bias") or bias == "lora_only" and key.endswith(".base_layer.bias")


def split_state_dict(sd: dict[str, torch.Tensor], bias: str) -> tuple[dict, dict]:
    """A gathered state dict of a LoRA'd module -> (base weights with plain names, adapter in PEFT naming)."""
    base, adapter = {}, {}
    for k, v in sd.items():
        if "lora_" in k:
            adapter[PEFT_PREFIX + re.sub(r"\.(lora_[AB])\.default\.", r".\1.", k)] = v
            continue
        plain = k.replace(".base_layer.", ".")
        base[plain] = v
        if bias != "none" and _is_adapter_key(k, bias):
            adapter[PEFT_PREFIX + plain] = v
    return base, adapter


def save_adapter(adapter_sd: dict[str, torch.Tensor], lora_cfg, out: Path, base_model: str | None,
                 task_type: str | None) -> Path:
    """Write a PEFT adapter folder."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = peft_config(lora_cfg, task_type)
    cfg.base_model_name_or_path = base_model
    cfg.save_pretrained(str(out))
    save_file({k: v.contiguous() for k, v in adapter_sd.items()}, str(out / "adapter_model.safetensors"))
    return out


def load_adapter_weights(module: nn.Module, folder: Path) -> None:
    """Load a PEFT adapter folder's weights into LoRA layers already injected in ``module``."""
    f = folder / "adapter_model.safetensors"
    if not f.is_file():
        raise CheckpointError(f"lora.init_from={folder}: no adapter_model.safetensors there")
    own = dict(module.named_parameters())
    loaded = {}
    for k, v in load_file(str(f)).items():
        name = k.removeprefix(PEFT_PREFIX)
        name = re.sub(r"\.(lora_[AB])\.", r".\1.default.", name)
        if name not in own:
            name = name.replace(".bias", ".base_layer.bias") if name.replace(".bias", ".base_layer.bias") in own else name
        loaded[name] = v
    missing = sorted(k for k, p in own.items() if "lora_" in k and k not in loaded)
    unknown = sorted(k for k in loaded if k not in own)
    if missing or unknown:
        raise CheckpointError(
            f"lora.init_from={folder} does not fit this model: missing {missing[:5]}, unexpected {unknown[:5]} "
            "(same target_modules and r as when it was saved?)")
    with torch.no_grad():
        for k, v in loaded.items():
            if own[k].shape != v.shape:
                raise CheckpointError(f"lora.init_from={folder}: {k} has shape {tuple(v.shape)}, model has "
                                      f"{tuple(own[k].shape)} (different r?)")
            own[k].copy_(v)
