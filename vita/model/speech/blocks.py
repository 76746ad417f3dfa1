"""LLaMA-style transformer blocks for the speech decoders (``nar_ar``, ``ctc``).

A pre-norm block: RMSNorm -> multi-head attention with rotary positions -> residual, RMSNorm -> SwiGLU MLP ->
residual, no biases. Sub-module names follow the LLaMA layout (``self_attn.q_proj`` ... ``mlp.down_proj``,
``input_layernorm``, ``post_attention_layernorm``) so checkpoints written in that layout (Freeze-Omni /
VITA-1.5's audio decoder, :mod:`vita.interop.speech_decoder`) load key for key.

Attention takes a boolean mask (``True`` = may attend) and an optional cache of earlier keys/values, so the
same block runs a whole teacher-forced sequence (training) and one step at a time (generation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KV = tuple[torch.Tensor, torch.Tensor]


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale (computed in fp32)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rope(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> KV:
    """``(cos, sin)`` of shape ``[N, L, head_dim]`` for integer ``positions [N, L]`` (half-split layout)."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    ang = positions.float().unsqueeze(-1) * inv
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    turned = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.unsqueeze(1) + turned * sin.unsqueeze(1)


class KeysValues(nn.Module):
    """The key and value projections of an attention layer (``k_proj``, ``v_proj``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"speech decoder: hidden {dim} is not a multiple of heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def keys_values(self, x: torch.Tensor, pos: KV) -> KV:
        """``[N, heads, L, head_dim]`` keys (rotated) and values of ``x``."""
        return _rotate(self._split(self.k_proj(x)), *pos), self._split(self.v_proj(x))


class Attention(KeysValues):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__(dim, heads)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, pos: KV, mask: torch.Tensor | None, past: KV | None) -> tuple[torch.Tensor, KV]:
        n, length, _ = x.shape
        q = _rotate(self._split(self.q_proj(x)), *pos)
        k, v = self.keys_values(x, pos)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask.unsqueeze(1))
        return self.o_proj(out.transpose(1, 2).reshape(n, length, -1)), (k, v)


class MLP(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, inner, bias=False)
        self.up_proj = nn.Linear(dim, inner, bias=False)
        self.down_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """One LLaMA decoder layer. ``forward(x, pos, mask, past) -> (x, (keys, values))``; ``mask [N, Lq, Lk]``
    bool (``None`` = attend to everything), ``past`` the cached keys/values this step extends."""

    def __init__(self, dim: int, heads: int, inner: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.mlp = MLP(dim, inner)
        self.input_layernorm = RMSNorm(dim, eps)
        self.post_attention_layernorm = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, pos: KV, mask: torch.Tensor | None = None,
                past: KV | None = None) -> tuple[torch.Tensor, KV]:
        a, kv = self.self_attn(self.input_layernorm(x), pos, mask, past)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), kv


class KeysValuesOnly(nn.Module):
    """What a LLaMA layer needs to give its keys and values and nothing else (``input_layernorm``,
    ``self_attn.k_proj``, ``self_attn.v_proj``): the last layer of a stack whose output nobody reads."""

    def __init__(self, dim: int, heads: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.self_attn = KeysValues(dim, heads)
        self.input_layernorm = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, pos: KV, mask: torch.Tensor | None = None,
                past: KV | None = None) -> tuple[None, KV]:
        return None, self.self_attn.keys_values(self.input_layernorm(x), pos)


def padding_mask(lengths: torch.Tensor, length: int) -> torch.Tensor:
    """``[N, length]`` bool: position < length of its row."""
    return torch.arange(length, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def bidirectional_mask(lengths: torch.Tensor, length: int) -> torch.Tensor:
    """``[N, L, L]``: valid positions see every valid position; padding sees position 0 only (never NaN)."""
    valid = padding_mask(lengths, length)
    mask = valid.unsqueeze(1) & valid.unsqueeze(2)
    mask[..., 0] = True
    return mask
