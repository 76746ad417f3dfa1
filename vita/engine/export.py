"""Exports: the trained model as plain Hugging Face / PEFT artefacts.

``final/`` holds the LLM in HF format (``AutoModelForCausalLM.from_pretrained(final)``) and the
tokenizer. For a group trained with LoRA, ``final/`` holds its *base* weights and
``final/adapters/<group>/`` the PEFT adapter (``PeftModel.from_pretrained(base, adapter)``);
``python -m vita.export`` merges an adapter into a full model. A quantised (QLoRA) LLM exports
only its adapter; its base is the folder named in the export meta file (``base_model``).
"""

from __future__ import annotations

from pathlib import Path

import deepspeed
import torch
from safetensors.torch import save_file
from torch import nn

from vita.artefacts import SPEECH_DECODER, write_export_meta, write_speech
from vita.model.lora import save_adapter, split_state_dict
from vita.model.tokenizer_files import save_tokenizer


def full_state_dict(module: nn.Module, zero_stage: int, rank: int, copy: bool = True) -> dict[str, torch.Tensor] | None:
    """The whole state dict on rank 0 (gathered under ZeRO-3), as contiguous CPU tensors; None elsewhere.

    ``copy=False`` (a model outside DeepSpeed, e.g. ``vita.interop.convert``) hands out the tensors
    themselves, so exporting needs no second copy of the model in memory.
    """
    params = list(module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=zero_stage == 3):
        if rank != 0:
            return None
        return {k: v.detach().to("cpu", copy=copy).contiguous() for k, v in module.state_dict().items()}


def export_model(model: nn.Module, tokenizer, out: Path, zero_stage: int, rank: int, meta: dict,
                 lora: dict | None = None, trainable: set[str] | None = None, copy: bool = True) -> Path | None:
    """Write ``out/``: the LLM (HF format), each other group as ``<group>.safetensors``, LoRA adapters
    per group under ``adapters/<group>/``, the tokenizer and the export meta file (:mod:`vita.artefacts`).

    Args:
        lora: ``group -> lora settings`` for groups trained with LoRA (``vita.stage.lora_groups``).
        trainable: export only these groups (``stage.export=trainable``); None = all.
        copy: see :func:`full_state_dict`.
    """
    sd = full_state_dict(model, zero_stage, rank, copy=copy)
    if rank != 0:
        return None
    lora = lora or {}
    out.mkdir(parents=True, exist_ok=True)
    written, adapters = [], {}
    for group, prefix in model.group_prefixes().items():
        if trainable is not None and group not in trainable:
            continue
        gsd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
        if group in lora:
            gsd, adapter = split_state_dict(gsd, lora[group].bias)
            task = "CAUSAL_LM" if group == "llm" else None
            base = getattr(model.llm.config, "vita_base_model", None) if group == "llm" else None
            save_adapter(adapter, lora[group], out / "adapters" / group, base or str(out), task)
            adapters[group] = f"adapters/{group}"
        if group == "llm":
            _export_llm(model, gsd, out, meta)
        else:
            save_file(gsd, str(out / f"{group}.safetensors"))
        written.append(group)
    if SPEECH_DECODER in written:
        save_speech(model, out, (meta.get("model") or {}).get("speech") or {})
    save_tokenizer(tokenizer, out)  # in the spelling transformers 4 (VITA's pin) reads too
    base_model = getattr(model.llm.config, "vita_base_model", None)
    meta = {**meta, "groups": written, **({"adapters": adapters} if adapters else {}),
            **({"base_model": base_model} if base_model else {})}
    write_export_meta(out, meta)
    return out


def save_speech(model: nn.Module, out: Path, speech_cfg: dict) -> None:
    """A speaking model's decoder config (registry key, shape) and codec (its folder, or key + options) beside
    ``speech_decoder.safetensors`` (:func:`vita.artefacts.write_speech`), so the export speaks on its own."""
    dec, codec = model.speech_decoder, model.speech_codec
    key, path, options = model.speech_codec_spec
    decoder_config = {"decoder": speech_cfg.get("decoder"), "decoder_overrides": speech_cfg.get("decoder_overrides") or {},
                      "llm_hidden": model.llm.config.get_text_config().hidden_size, "codebooks": dec.codebooks,
                      "codebook_size": dec.codebook_size, "codec": key,
                      **({"config": dec.config} if isinstance(getattr(dec, "config", None), dict) else {})}
    write_speech(out, decoder_config, codec, {"codec": key, "codec_path": path, "codec_options": dict(options)})


def _export_llm(model: nn.Module, llm_sd: dict, out: Path, meta: dict) -> None:
    if getattr(model.llm.config, "vita_base_model", None):
        model.llm.config.save_pretrained(out)  # k-bit weights are not re-exported: the base is the original
    else:
        model.llm.save_pretrained(out, state_dict=llm_sd, safe_serialization=True)
