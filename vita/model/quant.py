"""QLoRA: load the LLM quantised to 4-bit (nf4, double quant) or 8-bit through bitsandbytes."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from vita.errors import ConfigError


def load_quantized_llm(model_cfg, vocab_size: int | None, work_dir: Path, compute_dtype: torch.dtype,
                       gradient_checkpointing: bool) -> torch.nn.Module:
    """A k-bit LLM ready for LoRA training.

    A random-init backbone (no ``model.pretrained``) or a GGUF one (``model.gguf_file``: transformers
    cannot quantise while loading a GGUF) is first built in full precision and saved to
    ``work_dir/base_model`` so bitsandbytes can quantise it on load; that folder is the base of the
    exported adapter.
    """
    try:
        from peft import prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    except ImportError as e:  # pragma: no cover - bitsandbytes is an install requirement
        raise ConfigError(f"model.quantization needs bitsandbytes: {e}") from None
    from vita.model.backbones import build_backbone

    path = model_cfg.pretrained
    if not path or model_cfg.gguf_file:
        path = str(work_dir / "base_model")
        if not dist.is_initialized() or dist.get_rank() == 0:
            build_backbone(model_cfg, vocab_size=vocab_size).save_pretrained(path)
        if dist.is_initialized():
            dist.barrier()
    if model_cfg.quantization == "4bit":
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=compute_dtype)
    else:
        bnb = BitsAndBytesConfig(load_in_8bit=True)
    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    llm = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=bnb, device_map={"": device}, attn_implementation=model_cfg.attn_implementation,
        trust_remote_code=bool(model_cfg.trust_remote_code) or None)
    # Train mode before any forward: a no-grad eval forward makes bitsandbytes repack 4-bit weights
    # into an inference-only CPU layout that cannot be trained (reference/stack.md §4).
    llm.train()
    llm = prepare_model_for_kbit_training(llm, use_gradient_checkpointing=gradient_checkpointing,
                                          gradient_checkpointing_kwargs={"use_reentrant": False})
    llm.config.vita_base_model = str(path)
    return llm
