"""Packing: several samples per row, each keeping to itself.

Rows are filled first-fit in the micro-batch's order (deterministic). Position ids restart at 0
for every sample (and for the padding tail), which is how transformers isolates packed samples
for sdpa when ``attention_mask`` is None and no cache is used (flash-attn varlen reads the same
position ids). A sample's first label is set to -100: unpacked, the first token is never
predicted, so a packed row's loss is exactly the sum of its samples' losses.
"""

from __future__ import annotations

from vita.errors import DataError


def pack_rows(lengths: list[int], max_length: int) -> list[list[int]]:
    """First-fit: sample positions grouped into rows whose lengths sum to at most ``max_length``."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i, n in enumerate(lengths):
        if n > max_length:
            raise DataError(f"a sample of {n} tokens does not fit a packed row of data.max_length={max_length}")
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(max_length - n)
    return rows


def position_ids_for(lengths: list[int], row_length: int) -> list[int]:
    """0..n-1 for each sample, then 0.. for the padding tail."""
    out = [p for n in lengths for p in range(n)]
    return out + list(range(row_length - len(out)))
