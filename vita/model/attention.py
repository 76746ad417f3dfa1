"""Attention masks built on the device, without a host sync: causal attention within segments.

A row holds segments: the samples of a packed row (position ids restart at 0 for each, and for
the padding tail) or, unpacked, the real tokens then the padding. A token attends to the earlier
tokens of its own segment only, so packed samples never see each other and real tokens never see
padding (padding rows see only padding: no row is empty, so no NaN).

transformers' own mask code asks the device whether the padding mask is all ones
(``_ignore_causal_mask_sdpa``), a host sync on every forward; a ready 4-D mask skips that. This is
for ``sdpa`` and ``eager``; flash-attn builds ``cu_seqlens`` from the position ids itself.
"""

from __future__ import annotations

import torch

from vita.errors import ConfigError


def require_flash_attn(attn_implementation: str) -> None:
    """``model.attn_implementation=flash_attention_2`` without flash-attn installed: one clear line (the only check)."""
    import importlib.util

    if attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ConfigError("model.attn_implementation=flash_attention_2 needs flash-attn: `pip install -e .[flash]` "
                          "on a CUDA machine, or use sdpa")


def segment_ids(attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None, shape) -> torch.Tensor:
    """[B, L] segment number per position: from position-id restarts when packed, else 1 real / 2 padding."""
    if position_ids is not None:
        return torch.cumsum(position_ids == 0, dim=1)
    if attention_mask is None:
        return torch.ones(shape, dtype=torch.long)
    return 2 - attention_mask.long()


def segment_causal_mask(segments: torch.Tensor, impl: str, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, L, L] mask: ``sdpa`` bool (True = attend), ``eager`` additive (0 / dtype min)."""
    n = segments.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=segments.device).tril_()
    allowed = (segments.unsqueeze(2) == segments.unsqueeze(1)) & causal
    allowed = allowed.unsqueeze(1)
    if impl == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=segments.device).masked_fill_(~allowed,
                                                                                         torch.finfo(dtype).min)
