"""VITA-1.5's own audio encoder (``vita-1.5.md`` §4.2), written from its description.

fbank [B, T, 80] -> global CMVN -> Conv2d subsampling x4 (two 3x3 stride-2 convs + ReLU, then
Linear(C * 19 -> d)) -> input layer (Linear, LayerNorm, Dropout, ReLU) -> sinusoidal positions
(x * sqrt(d)) -> N pre-norm blocks with Transformer-XL style relative-position attention
(``linear_pos``, ``pos_bias_u``/``pos_bias_v``) and a ReLU FFN -> final LayerNorm.

Module names follow the released ``final.pt`` layout (``global_cmvn``, ``enc.0`` subsampling,
``enc.1`` transformer with ``embed``, ``encoders.i.{self_attn, feed_forward, norm1, norm2}``,
``after_norm``) with one difference: VITA's ``enc.0`` is a ``Subsampling`` wrapper holding the
Conv2d stack as ``core`` (``whale/module/component/subsampling.py``), so its six subsampling
tensors are ``enc.0.core.{conv.0, conv.2, out.0}.*`` where vita's are ``enc.0.{conv.0, conv.2, out.0}.*``;
:func:`to_upstream` / :func:`from_upstream` translate (the only names that differ). ``chunk_size > 0`` gives WeNet-style chunked attention (each frame sees its own
chunk and all earlier ones, for streaming); 0 = full context. The released model's *random*
dynamic chunk sizes during training are not reproduced.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SUBSAMPLING = "enc.0."
"""vita's prefix of the Conv2d subsampling (``Subsampling4``)."""
SUBSAMPLING_UPSTREAM = "enc.0.core."
"""VITA's prefix of the same tensors (``Subsampling.core = Conv2dSubsampling4``)."""


def to_upstream(name: str) -> str:
    """A whale tensor name (relative to the encoder) in VITA's spelling: ``enc.0.conv.0.weight`` -> ``enc.0.core.conv.0.weight``."""
    return SUBSAMPLING_UPSTREAM + name[len(SUBSAMPLING):] if name.startswith(SUBSAMPLING) else name


def from_upstream(name: str) -> str:
    """The inverse of :func:`to_upstream`; names already in vita's spelling pass through."""
    return SUBSAMPLING + name[len(SUBSAMPLING_UPSTREAM):] if name.startswith(SUBSAMPLING_UPSTREAM) else name


class GlobalCMVN(nn.Module):
    """``(x - mean) * istd`` per mel bin; the statistics are buffers saved with the weights."""

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("istd", torch.ones(n_mels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the statistics stay fp32 under DeepSpeed bf16/fp16 (it casts parameters, not buffers): keep x's dtype
        return ((x - self.mean) * self.istd).to(x.dtype)

    def load_stats(self, path: str | Path) -> None:
        """Read WeNet-style JSON (``mean_stat``, ``var_stat``, ``frame_num``) or Kaldi text stats."""
        text = Path(path).read_text()
        if text.lstrip().startswith("{"):
            d = json.loads(text)
            s, sq, n = torch.tensor(d["mean_stat"]), torch.tensor(d["var_stat"]), float(d["frame_num"])
        else:  # Kaldi text matrix: [ sums... count \n sq-sums... 0 ]
            rows = [r.split() for r in text.replace("[", "").replace("]", "").strip().splitlines() if r.strip()]
            a, b = [torch.tensor([float(x) for x in r]) for r in rows[:2]]
            s, sq, n = a[:-1], b[:-1], float(a[-1])
        mean = s / n
        var = (sq / n - mean**2).clamp_min(1e-20)
        self.mean.copy_(mean)
        self.istd.copy_(1.0 / var.sqrt())


class Subsampling4(nn.Module):
    """Two Conv2d(3x3, stride 2) + ReLU over (time, mel), then Linear(C * F', d): T -> (T-1)//2 - 1 // 2."""

    def __init__(self, n_mels: int, d: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, d, 3, 2), nn.ReLU(), nn.Conv2d(d, d, 3, 2), nn.ReLU())
        f = ((n_mels - 1) // 2 - 1) // 2
        self.out = nn.Sequential(nn.Linear(d * f, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x.unsqueeze(1))  # [B, d, T', F']
        b, c, t, f = x.shape
        return self.out(x.transpose(1, 2).reshape(b, t, c * f))


class RelPosAttention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.h, self.dk = heads, d // heads
        self.linear_q, self.linear_k, self.linear_v, self.linear_out = (nn.Linear(d, d) for _ in range(4))
        self.linear_pos = nn.Linear(d, d, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.dk))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.dk))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """``key_mask``: [B, T] (True = real frame) or [B, T, T] (query x key)."""
        b, t, _ = x.shape
        q = self.linear_q(x).view(b, t, self.h, self.dk)
        k = self.linear_k(x).view(b, t, self.h, self.dk).transpose(1, 2)
        v = self.linear_v(x).view(b, t, self.h, self.dk).transpose(1, 2)
        p = self.linear_pos(pos).view(1, t, self.h, self.dk).transpose(1, 2)
        ac = (q + self.pos_bias_u).transpose(1, 2) @ k.transpose(-2, -1)
        bd = (q + self.pos_bias_v).transpose(1, 2) @ p.transpose(-2, -1)
        scores = (ac + bd) / math.sqrt(self.dk)
        pad = ~(key_mask[:, None, None, :] if key_mask.dim() == 2 else key_mask[:, None])
        attn = scores.masked_fill(pad, float("-inf")).softmax(-1).masked_fill(pad, 0.0)
        out = (self.dropout(attn) @ v).transpose(1, 2).reshape(b, t, -1)
        return self.linear_out(out)


class FeedForward(nn.Module):
    def __init__(self, d: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.w_1, self.w_2, self.dropout = nn.Linear(d, ffn), nn.Linear(ffn, d), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(F.relu(self.w_1(x))))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = RelPosAttention(d, heads, 0.0)
        self.feed_forward = FeedForward(d, ffn, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d, eps=1e-5), nn.LayerNorm(d, eps=1e-5)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.self_attn(self.norm1(x), pos, key_mask))
        return x + self.dropout(self.feed_forward(self.norm2(x)))


class Transformer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.d = d
        self.embed = nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d, eps=1e-5), nn.Dropout(dropout), nn.ReLU())
        self.pos_dropout = nn.Dropout(dropout)
        self.encoders = nn.ModuleList(Block(d, heads, ffn, dropout) for _ in range(layers))
        self.after_norm = nn.LayerNorm(d, eps=1e-5)

    def positions(self, t: int, device, dtype) -> torch.Tensor:
        pos = torch.arange(t, device=device, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, self.d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / self.d))
        pe = torch.zeros(t, self.d, device=device)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        return pe.unsqueeze(0).to(dtype)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(x) * math.sqrt(self.d)
        pos = self.pos_dropout(self.positions(x.shape[1], x.device, x.dtype))
        x = self.pos_dropout(x)
        for blk in self.encoders:
            x = blk(x, pos, key_mask)
        return self.after_norm(x)


class WhaleEncoder(nn.Module):
    """The whole encoder: ``forward(fbank [B, T, n_mels], lengths [B]) -> ([B, T', d], lengths')``."""

    def __init__(self, n_mels: int = 80, d: int = 1024, heads: int = 16, ffn: int = 4096, layers: int = 24,
                 dropout: float = 0.1, chunk_size: int = 0) -> None:
        super().__init__()
        self.chunk_size = chunk_size
        self.global_cmvn = GlobalCMVN(n_mels)
        self.enc = nn.ModuleList([Subsampling4(n_mels, d), Transformer(d, heads, ffn, layers, dropout)])

    @staticmethod
    def out_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return ((lengths - 1) // 2 - 1) // 2

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.enc[0](self.global_cmvn(x))
        out_len = self.out_lengths(lengths).clamp(min=1, max=x.shape[1])
        key_mask = torch.arange(x.shape[1], device=x.device)[None, :] < out_len[:, None]
        if self.chunk_size > 0:
            chunk = torch.arange(x.shape[1], device=x.device) // self.chunk_size
            key_mask = key_mask[:, None, :] & (chunk[None, None, :] <= chunk[None, :, None])
        return self.enc[1](x, key_mask), out_len
