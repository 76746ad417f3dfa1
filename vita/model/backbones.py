"""LLM backbones: registry keys -> Hugging Face configs (shape numbers only).

Each entry is a factory ``(**overrides) -> PretrainedConfig``; every family has a ``tiny-*``
sibling for CPU tests. :func:`build_backbone` turns one into a causal LM with random init, or
loads weights from a local folder / hub id / GGUF file (``gguf_file=``).

Families: ``qwen2.5`` (0.5B, 1.5B, 7B), ``mixtral`` (8x7B; router aux loss), ``mistral-nemo``
(12B), ``qwen2.5-fo`` (Qwen2.5 + the user-state head, built by OmniModel from
``vita_state_classes``), ``llama`` (SmolLM2-135M, Llama-3-8B).
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    LlamaConfig,
    MistralConfig,
    MixtralConfig,
    PretrainedConfig,
    Qwen2Config,
)

from vita.errors import ConfigError
from vita.model.attention import require_flash_attn
from vita.registry import BACKBONES

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=1024, max_position_embeddings=1024, rope_theta=10000.0)
TINY_QWEN2 = {**TINY, "tie_word_embeddings": True}
QWEN25_0_5B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                   num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0,
                   rms_norm_eps=1e-6, tie_word_embeddings=True)
QWEN25_1_5B = {**QWEN25_0_5B, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
               "num_attention_heads": 12}
QWEN25_7B = {**QWEN25_0_5B, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
             "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False}
MIXTRAL_8X7B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=32000, max_position_embeddings=32768, rope_theta=1000000.0,
                    num_local_experts=8, num_experts_per_tok=2, router_aux_loss_coef=0.02, output_router_logits=True,
                    rms_norm_eps=1e-5, tie_word_embeddings=False)
NEMO_12B = dict(hidden_size=5120, intermediate_size=14336, num_hidden_layers=40, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, vocab_size=131072, max_position_embeddings=1024000,
                rope_theta=1000000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=None)
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0,
                    rms_norm_eps=1e-5, tie_word_embeddings=True)
LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                 rms_norm_eps=1e-5, tie_word_embeddings=False)
FO_STATE = dict(vita_state_classes=3)  # predict_usr_state = 2 -> Linear(hidden, 3)


def _reg(name: str, cls: type, shape: dict, doc: str) -> None:
    def factory(**overrides: Any) -> PretrainedConfig:
        return cls(**{**shape, **overrides})

    factory.__doc__ = doc
    factory.__name__ = name.replace("-", "_").replace(".", "")
    BACKBONES.register(name)(factory)


_reg("tiny-qwen2", Qwen2Config, TINY_QWEN2, "A 2-layer, 64-wide Qwen2 for CPU tests and the demo (~0.2 M parameters).")
_reg("qwen2.5-0.5b", Qwen2Config, QWEN25_0_5B, "Qwen2.5-0.5B shapes.")
_reg("qwen2.5-1.5b", Qwen2Config, QWEN25_1_5B, "Qwen2.5-1.5B shapes.")
_reg("qwen2.5-7b", Qwen2Config, QWEN25_7B, "Qwen2.5-7B shapes (VITA-1.5's LLM, ~7.62 B).")
_reg("tiny-qwen2.5-fo", Qwen2Config, {**TINY_QWEN2, **FO_STATE}, "Tiny Qwen2 with the 3-class user-state head.")
_reg("qwen2.5-fo-7b", Qwen2Config, {**QWEN25_7B, **FO_STATE}, "Qwen2.5-7B with the 3-class user-state head.")
_reg("tiny-mixtral", MixtralConfig, {**TINY, "num_local_experts": 4, "num_experts_per_tok": 2,
                                     "router_aux_loss_coef": 0.02, "output_router_logits": True},
     "A 2-layer Mixtral with 4 experts (top-2) and the router aux loss on.")
_reg("mixtral-8x7b", MixtralConfig, MIXTRAL_8X7B, "Mixtral-8x7B shapes (VITA-1.0's LLM).")
_reg("tiny-mistral-nemo", MistralConfig, {**TINY, "head_dim": 32, "sliding_window": None},
     "A 2-layer Mistral with head_dim != hidden/heads, as in NeMo.")
_reg("mistral-nemo-12b", MistralConfig, NEMO_12B, "Mistral-NeMo-12B shapes.")
_reg("tiny-llama", LlamaConfig, {**TINY, "tie_word_embeddings": True}, "A 2-layer Llama.")
_reg("smollm2-135m", LlamaConfig, SMOLLM2_135M, "SmolLM2-135M shapes (the real small LLM of smol_omni).")
_reg("llama3-8b", LlamaConfig, LLAMA3_8B, "Llama-3-8B shapes.")


def build_backbone(model_cfg, vocab_size: int | None = None) -> torch.nn.Module:
    """Build the LLM named by ``model_cfg.backbone``.

    Args:
        model_cfg: ``cfg.model``.
        vocab_size: the tokenizer's size; random-init models get exactly this many embeddings,
            pretrained ones are resized only if the tokenizer is larger.
    """
    attn = model_cfg.attn_implementation
    require_flash_attn(attn)
    kw: dict[str, Any] = {"attn_implementation": attn, "dtype": torch.float32}
    if model_cfg.pretrained:
        if model_cfg.trust_remote_code:
            kw["trust_remote_code"] = True
        path = model_cfg.pretrained
        if model_cfg.gguf_file:  # dequantised once into a cached HF folder (vita/model/gguf_cache.py)
            from vita.model.gguf_cache import hf_folder

            path = str(hf_folder(model_cfg.pretrained, model_cfg.gguf_file))
        try:
            lm = AutoModelForCausalLM.from_pretrained(path, **kw)
        except (OSError, ValueError) as e:
            raise ConfigError(f"model.pretrained={model_cfg.pretrained}: cannot load a causal LM ({e})") from e
        if vocab_size and vocab_size > lm.get_input_embeddings().num_embeddings:
            # a tokenizer larger than the pretrained LLM is a trained run's (media tokens added): its weights are
            # loaded next, so the new rows need no (slow, announced) mean-and-covariance initialisation
            lm.resize_token_embeddings(vocab_size, mean_resizing=False)
        return lm
    ov = model_cfg.overrides
    # nested values (rope_parameters, rope_scaling) must reach the HF config as plain dicts
    overrides = OmegaConf.to_container(ov, resolve=True) if isinstance(ov, DictConfig) else dict(ov or {})
    if vocab_size:
        overrides.setdefault("vocab_size", vocab_size)
    config = BACKBONES.build(model_cfg.backbone, **overrides)
    return AutoModelForCausalLM.from_config(config, **kw)


def forget_gguf_quantization(lm: torch.nn.Module) -> None:
    """A GGUF model is dequantised to plain fp32 tensors on load, but transformers still marks it as
    quantised and refuses ``save_pretrained``; drop that mark so exports are plain HF folders."""
    if getattr(lm, "hf_quantizer", None) is not None:
        lm.hf_quantizer = None
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    if getattr(lm, "is_quantized", False):
        lm.is_quantized = False


def load_config(path: str, trust_remote_code: bool = False) -> PretrainedConfig:
    """Read a saved HF config (used to check exports)."""
    return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
