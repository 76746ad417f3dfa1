"""Sequence parallelism (``engine.sequence_parallel: N``): N ranks share each sample's sequence.

The media are encoded and spliced into the embeddings first (:meth:`OmniModel.embed`, the one
path), then the sequence -- embeddings, shifted labels, position ids, segment (packing) ids -- is
split into N contiguous shares, one per rank of the group. Inside every attention layer DeepSpeed's
:class:`~deepspeed.runtime.sequence_parallel.ulysses_sp.UlyssesSPAttentionHF` all-to-alls the
local queries/keys/values into the whole sequence for ``heads / N`` heads, runs the core attention and
all-to-alls back. Everything else in the LLM (norms, MLP, the LM head, the loss) is per token and
runs on the local share only.

What is DeepSpeed's and what is vita's, and why:

- ``UlyssesSPAttentionHF`` (the all-to-alls, GQA head replication, shape checks) is used as it is.
- Its ``register_with_transformers`` is not: it replaces the attention function for the whole process
  and drops every attention mask, relying on ``is_causal``. A multimodal batch needs masks: packed rows
  (several samples in one row must not see each other) and padded rows. Here the ``sdpa`` entry is
  wrapped instead: outside an SP forward it is the plain function; inside one, Ulysses runs with a core
  attention that applies vita's block-diagonal causal mask (:mod:`vita.model.attention`) built once
  per forward over the *whole* sequence, from the segment ids of the whole batch, which every rank of
  the group holds. A single unpadded sample keeps ``is_causal`` (no mask tensor at all).
- ``UlyssesSPDataLoaderAdapter`` is not used: it shards ``input_ids`` before the model, but the media
  must be spliced into the embeddings first (a placeholder block may straddle the cut, and the
  encoders need the whole clip). The sampler gives the N ranks of a group the same samples
  (:func:`data_rank`), and :meth:`SequenceParallel.shard` cuts after the splice.

The loss stays the global token mean: each rank sums the cross-entropy of its own share's tokens
(the labels are shifted *before* the cut, so the token at a share's border is predicted by the rank
that holds its predecessor), and the engine divides by the group-deduplicated token count.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from vita.errors import ConfigError
from vita.model.attention import segment_causal_mask

_ACTIVE: SequenceParallel | None = None
_PLAIN_SDPA = None


def check_sp_size(size: int, world: int, heads: int | None, kv_heads: int | None, where: str = "") -> None:
    """One clear error when ``engine.sequence_parallel`` does not divide the world or the head counts."""
    if size < 1:
        raise ConfigError(f"engine.sequence_parallel must be >= 1, got {size}")
    if size == 1:
        return
    if world % size:
        raise ConfigError(f"engine.sequence_parallel={size} does not divide the world size {world}: use a divisor "
                          f"of {world}, or launch a multiple of {size} ranks")
    if heads is not None and heads % size:
        raise ConfigError(f"engine.sequence_parallel={size} does not divide the {heads} attention heads of {where}: "
                          f"Ulysses gives each rank heads / {size}; use a divisor of {heads}")
    if kv_heads is not None and kv_heads % size and size % kv_heads:
        raise ConfigError(f"engine.sequence_parallel={size} and the {kv_heads} key/value heads of {where}: one must "
                          "divide the other (Ulysses splits or replicates them)")


def data_rank(rank: int, world: int, size: int) -> tuple[int, int]:
    """(rank, world) of the data-parallel stream this rank reads: the N ranks of a group read the same."""
    return rank // size, world // size


class SequenceParallel:
    """One rank's place in its sequence-parallel group (ranks ``g*N .. g*N+N-1``) and the cut of a sequence."""

    def __init__(self, size: int) -> None:
        rank, world = dist.get_rank(), dist.get_world_size()
        check_sp_size(size, world, None, None)
        self.size, self.rank = size, rank % size
        self.group = None
        for g in range(world // size):  # every rank must take part in creating every group
            ranks = list(range(g * size, (g + 1) * size))
            pg = dist.new_group(ranks)
            if rank in ranks:
                self.group = pg
        self._ulysses: dict[int, object] = {}
        self._segments: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None
        _install_sdpa_wrapper()

    # -- cutting ----------------------------------------------------------------------------------
    def pad_len(self, length: int) -> int:
        return (-length) % self.size

    def shard(self, x: torch.Tensor, fill) -> torch.Tensor:
        """This rank's share of ``x`` along dim 1 after padding it to a multiple of N with ``fill``."""
        pad = self.pad_len(x.shape[1])
        if pad:
            tail = x.new_full((x.shape[0], pad, *x.shape[2:]), fill)
            x = torch.cat([x, tail], dim=1)
        n = x.shape[1] // self.size
        return x[:, self.rank * n:(self.rank + 1) * n]

    # -- encoders ---------------------------------------------------------------------------------
    def encode_shares(self, encode, *items: torch.Tensor) -> torch.Tensor:
        """``encode(*items)`` with each rank of the group encoding only its share of dim 0 (tiles and frames,
        audio clips), the outputs gathered in order on every rank; the gradient of each share flows back to
        the rank that encoded it, summed over the group. The count is padded to a multiple of N with copies
        of the first item (dropped after the gather): every rank calls the encoder once, as ZeRO-3 needs."""
        n = items[0].shape[0]
        per = -(-n // self.size)
        pad = per * self.size - n
        if pad:
            items = tuple(torch.cat([t, t[:1].expand(pad, *t.shape[1:])]) for t in items)
        mine = tuple(t[self.rank * per:(self.rank + 1) * per] for t in items)
        return _GatherShares.apply(encode(*mine), self.group, self.rank, self.size)[:n]

    # -- attention --------------------------------------------------------------------------------
    def begin(self, segments: torch.Tensor | None) -> None:
        """From here to :meth:`end` (after the backward: gradient checkpointing recomputes attention) the LLM's
        sdpa attention runs through Ulysses; ``segments`` [B, L_padded] (the whole sequence) restricts attention
        to each segment, causally; None = plain causal."""
        global _ACTIVE
        self._segments, self._mask, _ACTIVE = segments, None, self

    def end(self) -> None:
        """Back to plain attention (evaluation and generation run whole sequences on each rank)."""
        global _ACTIVE
        self._segments, self._mask, _ACTIVE = None, None, None

    def full_mask(self, dtype: torch.dtype) -> torch.Tensor | None:
        if self._segments is None:
            return None
        if self._mask is None:  # once per forward, shared by the layers (recomputed under checkpointing)
            self._mask = segment_causal_mask(self._segments, "sdpa", dtype)
        return self._mask

    def ulysses(self, module, batch: int):
        """DeepSpeed's Ulysses attention for this LLM and batch size (one per batch size: it checks shapes)."""
        if batch not in self._ulysses:
            from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF

            cfg = module.config
            heads = cfg.num_attention_heads
            self._ulysses[batch] = UlyssesSPAttentionHF(
                attn=_core_attention, batch_size=batch, attn_head_count=heads,
                attn_head_size=getattr(module, "head_dim", None) or cfg.hidden_size // heads,
                kv_head_count=getattr(cfg, "num_key_value_heads", None) or heads,
                num_hidden_layers=cfg.num_hidden_layers, process_group=self.group, seq_length_is_variable=True)
        return self._ulysses[batch]


class _GatherShares(torch.autograd.Function):
    """All-gather along dim 0 (equal shares); backward: the summed gradient of this rank's share (gloo has
    all_reduce, not reduce_scatter, on CPU)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group, rank: int, size: int) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous(), group=group)
        ctx.group, ctx.rank, ctx.n = group, rank, x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n], None, None, None


def _core_attention(module, query, key, value, attention_mask, *args, **kwargs):
    """The whole-sequence attention between Ulysses' two all-to-alls: sdpa with vita's segment mask."""
    kwargs.pop("position_ids", None)
    return _PLAIN_SDPA(module, query, key, value, _ACTIVE.full_mask(query.dtype), *args, **kwargs)


def _sdpa_or_ulysses(module, query, key, value, attention_mask, *args, **kwargs):
    if _ACTIVE is None:
        return _PLAIN_SDPA(module, query, key, value, attention_mask, *args, **kwargs)
    if "position_ids" not in kwargs or kwargs["position_ids"] is None:
        raise RuntimeError("sequence parallel attention needs the position ids (OmniModel passes them)")
    return _ACTIVE.ulysses(module, query.shape[0])(module, query, key, value, None, *args, **kwargs)


def _install_sdpa_wrapper() -> None:
    """Wrap transformers' ``sdpa`` entry once: unchanged outside :meth:`SequenceParallel.active`."""
    global _PLAIN_SDPA
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if _PLAIN_SDPA is None:
        _PLAIN_SDPA = ALL_ATTENTION_FUNCTIONS["sdpa"]
        ALL_ATTENTION_FUNCTIONS["sdpa"] = _sdpa_or_ulysses
