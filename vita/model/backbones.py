"""LLM backbones: registry keys -> Hugging Face configs (shape numbers only).

Each entry is a factory ``(**overrides) -> PretrainedConfig``. :func:`build_backbone` turns it
into a causal LM with random init, or loads weights from a local folder / hub id / GGUF file.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, Qwen2Config

from vita.errors import ConfigError
from vita.registry import BACKBONES

TINY_QWEN2 = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=1024,
    max_position_embeddings=1024,
    rope_theta=10000.0,
    tie_word_embeddings=True,
)
QWEN25_0_5B = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151936,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)


@BACKBONES.register("tiny-qwen2")
def tiny_qwen2(**overrides: Any) -> PretrainedConfig:
    """A 2-layer, 64-wide Qwen2 for CPU tests and the demo (~0.2 M parameters)."""
    return Qwen2Config(**{**TINY_QWEN2, **overrides})


@BACKBONES.register("qwen2.5-0.5b")
def qwen25_0_5b(**overrides: Any) -> PretrainedConfig:
    """Qwen2.5-0.5B shapes."""
    return Qwen2Config(**{**QWEN25_0_5B, **overrides})


def build_backbone(model_cfg, vocab_size: int | None = None) -> torch.nn.Module:
    """Build the LLM named by ``model_cfg.backbone``.

    Args:
        model_cfg: ``cfg.model``.
        vocab_size: the tokenizer's size; random-init models get exactly this many embeddings,
            pretrained ones are resized only if the tokenizer is larger.
    """
    kw: dict[str, Any] = {"attn_implementation": model_cfg.attn_implementation, "dtype": torch.float32}
    if model_cfg.pretrained:
        if model_cfg.trust_remote_code:
            kw["trust_remote_code"] = True
        if model_cfg.gguf_file:
            kw["gguf_file"] = model_cfg.gguf_file
        try:
            lm = AutoModelForCausalLM.from_pretrained(model_cfg.pretrained, **kw)
        except (OSError, ValueError) as e:
            raise ConfigError(f"model.pretrained={model_cfg.pretrained}: cannot load a causal LM ({e})") from e
        if vocab_size and vocab_size > lm.get_input_embeddings().num_embeddings:
            lm.resize_token_embeddings(vocab_size)
        return lm
    overrides = dict(model_cfg.overrides or {})
    if vocab_size:
        overrides.setdefault("vocab_size", vocab_size)
    config = BACKBONES.build(model_cfg.backbone, **overrides)
    return AutoModelForCausalLM.from_config(config, **kw)


def load_config(path: str, trust_remote_code: bool = False) -> PretrainedConfig:
    """Read a saved HF config (used to check exports)."""
    return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
