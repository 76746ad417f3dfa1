"""The answer spans a speech decoder reads: one function for training and inference."""

from __future__ import annotations

import torch
from torch import nn


def gather_spans(hidden: torch.Tensor, input_ids: torch.Tensor, spans: torch.Tensor,
                 embed: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each answer's hidden states and token embeddings out of a batch.

    Args:
        hidden: ``[B, L, H]`` the LLM's last hidden states.
        input_ids: ``[B, L]`` the batch's token ids.
        spans: ``[S, 3]`` long, ``(row, start, end)``: answer s is positions ``start:end`` of row ``row`` (its
            text tokens, the end-of-turn token excluded).
        embed: the LLM's input embedding module.

    Returns: ``hidden [S, T, H]`` and ``embeds [S, T, H]`` zero-padded to the longest span, and ``lengths [S]``.
    """
    spans = spans.to("cpu")
    lengths = (spans[:, 2] - spans[:, 1]).clamp(min=0)
    t = int(lengths.max()) if len(spans) else 0
    idx = torch.zeros(len(spans), max(t, 1), dtype=torch.long)
    rows = spans[:, 0].unsqueeze(1).expand_as(idx)
    for s, (_, start, end) in enumerate(spans.tolist()):
        idx[s, :end - start] = torch.arange(start, end)
    dev = hidden.device
    valid = (torch.arange(idx.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).to(dev)
    h = hidden[rows.to(dev), idx.to(dev)] * valid.unsqueeze(-1).to(hidden.dtype)
    e = embed(input_ids[rows.to(dev), idx.to(dev)]) * valid.unsqueeze(-1).to(hidden.dtype)
    return h, e.to(hidden.dtype), lengths.to(dev)
