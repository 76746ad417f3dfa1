"""Tiled MLP (``engine.tiled_mlp: K``): each LLM MLP runs on K tiles of the sequence, one at a time.

DeepSpeed's :class:`~deepspeed.runtime.sequence_parallel.ulysses_sp.TiledMLP` does the work: the
forward keeps only the MLP's input, the backward recomputes one tile at a time, so the
``[tokens x intermediate]`` activations exist for one tile only. K is fixed by config (not derived
from the length) and the sequence is zero-padded to a multiple of K, so that every rank makes the same
number of module calls whatever its length, which ZeRO-3's per-module parameter gathers require (and
DeepSpeed's gradient-ready flag, set on the K-th tile, needs exactly K tiles). The logits + loss counterpart is vita's ``engine.fused_loss=chunked``
(vita/model/loss.py), which already computes the head and cross-entropy in chunks of tokens.
"""

from __future__ import annotations

import types

import torch
from torch import nn


def _plain(mlp: nn.Module, x):
    return type(mlp).forward(mlp, x)


def _tiled_forward(self: nn.Module, x):
    from deepspeed.runtime.sequence_parallel.ulysses_sp import TiledMLP

    tiles, length = self._vita_tiles, x.shape[-2]
    if tiles <= 1 or not (self.training and x.requires_grad):
        return _plain(self, x)
    pad = (-length) % tiles  # exactly `tiles` equal tiles whatever the length: the same calls on every rank
    if pad:
        x = torch.cat([x, x.new_zeros(*x.shape[:-2], pad, x.shape[-1])], dim=-2)
    out = TiledMLP.apply(_plain, self, x, tiles, [p for p in self.parameters()])
    return out[..., :length, :] if pad else out


def tile_mlps(llm: nn.Module, tiles: int) -> int:
    """Switch every decoder layer's ``mlp`` of ``llm`` to ``tiles`` tiles; returns how many were switched."""
    n = 0
    for name, module in llm.named_modules():
        if name.endswith(".mlp") and hasattr(module, "down_proj"):
            module._vita_tiles = int(tiles)
            module.forward = types.MethodType(_tiled_forward, module)
            n += 1
    if n == 0:
        raise ValueError("engine.tiled_mlp: the LLM has no `mlp` modules with a down_proj (dense decoder layers)")
    return n
