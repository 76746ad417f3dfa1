"""PROJECTORS: encoder features [N, T, in_dim] -> LLM embeddings [N, T', out_dim].

Every factory takes ``(in_dim, out_dim, **options)`` and returns a :class:`Projector`, which
knows how many tokens it makes from how many (``num_tokens``) and has a ``dummy_inputs()``
used on ranks whose batch lacks the modality. Layouts follow ``vita-1.5.md`` §3 (vision) and
§4.3 (audio adapter). ``mlpNx_gelu`` works for any N (``mlp2x_gelu`` is VITA's default).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vita.errors import ConfigError
from vita.registry import PROJECTORS
from vita.spec import SameTokens, StridedTokens


class Projector(nn.Module):
    """Base class: ``forward(x [N, T, in_dim], lengths=None) -> [N, T', out_dim]``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim

    def token_count(self) -> Callable[[int], int]:
        """``input tokens -> output tokens`` (picklable: the data spec carries an audio adapter's)."""
        return SameTokens()

    def num_tokens(self, n: int) -> int:
        """Output tokens for ``n`` input tokens."""
        return self.token_count()(n)

    def dummy_inputs(self) -> torch.Tensor:
        """A small all-zero input on the projector's device, for ranks without this modality."""
        p = next(self.parameters(), None)
        dev, dt = (p.device, p.dtype) if p is not None else ("cpu", torch.float32)
        return torch.zeros(1, 4, self.in_dim, device=dev, dtype=dt)


class Sequential(Projector):
    """A token-wise stack of layers (``linear``, ``mlpNx_gelu``)."""

    def __init__(self, in_dim: int, out_dim: int, layers: list[nn.Module]) -> None:
        super().__init__(in_dim, out_dim)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.layers(x)


@PROJECTORS.register("linear")
def linear(in_dim: int, out_dim: int) -> Projector:
    """One Linear(in, out)."""
    return Sequential(in_dim, out_dim, [nn.Linear(in_dim, out_dim)])


def mlp_gelu(in_dim: int, out_dim: int, depth: int = 2) -> Projector:
    """Linear(in, out), then (depth - 1) x [GELU, Linear(out, out)]."""
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
    return Sequential(in_dim, out_dim, layers)


@PROJECTORS.register("mlp2x_gelu")
def mlp2x_gelu(in_dim: int, out_dim: int) -> Projector:
    """VITA's default: Linear -> GELU -> Linear (~27.5 M for 4096 -> 3584)."""
    return mlp_gelu(in_dim, out_dim, 2)


@PROJECTORS.register("identity")
def identity(in_dim: int, out_dim: int) -> Projector:
    """Passthrough; needs in_dim == out_dim."""
    if in_dim != out_dim:
        raise ConfigError(f"identity projector needs the encoder width ({in_dim}) to equal the LLM width ({out_dim})")
    return Sequential(in_dim, out_dim, [nn.Identity()])


@dataclass(frozen=True)
class PooledGridTokens:
    """A square grid of ``n`` tokens through AvgPool2d(2): ``(isqrt(n) // 2) ** 2``."""

    def __call__(self, n: int) -> int:
        return (math.isqrt(n) // 2) ** 2


@dataclass(frozen=True)
class GroupedTokens:
    """``group`` tokens -> 1 (a remainder dropped)."""

    group: int

    def __call__(self, n: int) -> int:
        return n // self.group


@dataclass(frozen=True)
class StridedGridTokens:
    """A square grid through a padded stride-2 conv: ``ceil(isqrt(n) / 2) ** 2``."""

    def __call__(self, n: int) -> int:
        return ((math.isqrt(n) + 1) // 2) ** 2


class SpatialPool(Projector):
    """``spp_v1..v3``: token grid h x h, AvgPool2d(2) (tokens / 4) between linear layers."""

    def __init__(self, in_dim: int, out_dim: int, version: int) -> None:
        super().__init__(in_dim, out_dim)
        if version == 1:
            self.pre, self.post = nn.Sequential(nn.Linear(in_dim, out_dim)), nn.Sequential(nn.Linear(out_dim, out_dim))
        elif version == 2:
            self.pre = nn.Sequential(nn.Linear(in_dim, out_dim), nn.Linear(out_dim, out_dim))
            self.post = nn.Sequential()
        else:
            self.pre = nn.Sequential(nn.Linear(in_dim, in_dim))
            self.post = nn.Sequential(nn.Linear(in_dim, out_dim), nn.Linear(out_dim, out_dim))
        self.pool = nn.AvgPool2d(2)

    def token_count(self) -> PooledGridTokens:
        return PooledGridTokens()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.post(_on_grid(self.pre(x), self.pool))


def _on_grid(x: torch.Tensor, fn: nn.Module) -> torch.Tensor:
    """``fn`` over the tokens ``[B, N, C]`` laid out as their square grid ``[B, C, h, h]``; back to ``[B, N', C]``."""
    b, n, c = x.shape
    h = math.isqrt(n)
    if h * h != n:
        raise ValueError(f"this projector needs a square token grid, got {n} tokens")
    return fn(x.transpose(1, 2).reshape(b, c, h, h)).flatten(2).transpose(1, 2)


for _v in (1, 2, 3):
    PROJECTORS.register(f"spp_v{_v}")(lambda in_dim, out_dim, _v=_v: SpatialPool(in_dim, out_dim, _v))


class GroupOfFour(Projector):
    """``vanilla`` (channel-interleaved) and ``minigpt`` (concatenated): 4 tokens -> 1, then Linear(4c, out)."""

    def __init__(self, in_dim: int, out_dim: int, interleave: bool) -> None:
        super().__init__(in_dim, out_dim)
        self.interleave = interleave
        self.proj = nn.Linear(4 * in_dim, out_dim)

    def token_count(self) -> GroupedTokens:
        return GroupedTokens(4)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        x = x[:, : n // 4 * 4].reshape(b, n // 4, 4, c)
        if self.interleave:
            x = x.transpose(2, 3)  # [b, n/4, c, 4]: channel k of token j lands at k * 4 + j
        return self.proj(x.reshape(b, n // 4, 4 * c))


PROJECTORS.register("vanilla")(lambda in_dim, out_dim: GroupOfFour(in_dim, out_dim, True))
PROJECTORS.register("minigpt")(lambda in_dim, out_dim: GroupOfFour(in_dim, out_dim, False))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SqueezeExcite(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        sq = max(8, int(ch // 4 + 4) // 8 * 8)
        self.fc1, self.fc2 = nn.Conv2d(ch, sq, 1), nn.Conv2d(sq, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    """MobileNetV3 block with expansion 1: depthwise 3x3 + LN + hard-swish, SE, 1x1 + LN; residual at stride 1."""

    def __init__(self, ch: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.dw = nn.Sequential(nn.Conv2d(ch, ch, 3, stride, 1, groups=ch, bias=False), LayerNorm2d(ch), nn.Hardswish())
        self.se = SqueezeExcite(ch)
        self.pw = nn.Sequential(nn.Conv2d(ch, ch, 1, bias=False), LayerNorm2d(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.se(self.dw(x)))
        return x + y if self.stride == 1 else y


class LDP(Projector):
    """MobileVLM's lightweight downsample projector: MLP, then two inverted residuals (the 2nd stride 2)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(in_dim, out_dim)
        self.mlp = nn.Sequential(nn.Identity(), nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        self.blocks = nn.Sequential(InvertedResidual(out_dim, 1), InvertedResidual(out_dim, 2))

    def token_count(self) -> StridedGridTokens:
        return StridedGridTokens()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return _on_grid(self.mlp(x), self.blocks)


PROJECTORS.register("ldp")(lambda in_dim, out_dim: LDP(in_dim, out_dim))


class AudioSubsampling(Projector):
    """VITA-1.5's audio adapter: right-pad (k-1), Conv1d(d, 2d, k, stride 2) -> LayerNorm -> GELU -> Linear(2d, out).

    Module names follow the released weights (``adpter.conv1d2`` -> ``conv1d``, ``bn2`` -> ``norm``,
    ``project`` -> ``linear``). ~17.8 M parameters for 1024 -> 3584.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 5, stride: int = 2) -> None:
        super().__init__(in_dim, out_dim)
        self.kernel_size, self.stride = kernel_size, stride
        self.conv1d = nn.Conv1d(in_dim, 2 * in_dim, kernel_size, stride)
        self.norm = nn.LayerNorm(2 * in_dim, eps=1e-3)
        self.linear = nn.Linear(2 * in_dim, out_dim)

    def token_count(self) -> StridedTokens:
        return StridedTokens(self.kernel_size, self.stride)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = F.pad(x.transpose(1, 2), (0, self.kernel_size - 1))
        x = self.conv1d(x).transpose(1, 2)
        return self.linear(F.gelu(self.norm(x)))


PROJECTORS.register("subsampling")(lambda in_dim, out_dim: AudioSubsampling(in_dim, out_dim))

_MLP = re.compile(r"^mlp(\d+)x_gelu$")


def build_projector(name: str, in_dim: int, out_dim: int, **options: Any) -> Projector:
    """Build ``name`` from PROJECTORS; ``mlpNx_gelu`` works for any N >= 1."""
    m = _MLP.match(name)
    if m and name not in PROJECTORS:
        return mlp_gelu(in_dim, out_dim, int(m.group(1)), **options)
    return PROJECTORS.build(name, in_dim=in_dim, out_dim=out_dim, **options)
