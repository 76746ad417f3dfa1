"""Packing: several samples per row, each keeping to itself.

Across the batch (``sampler: token_budget`` + ``data.packing``): the sampler shuffles the samples
(seeded), takes them in windows of ``pack_window`` samples and fills rows of ``max_length`` from
each whole window, first-fit-decreasing (:func:`pack_ffd`); rows, fullest first, are grouped
``token_budget // max_length`` to a micro-batch, each micro-batch listing its samples row by row.
The collator's first-fit (:func:`pack_rows`) then rebuilds exactly those rows: a sample placed in
a later row did not fit any earlier one when it was placed, and rows only fill up afterwards.
Other samplers pack within each micro-batch (first fit in its order).

Isolation: position ids restart at 0 for every sample (and for the padding tail); the model turns
them into a block-diagonal causal mask for sdpa/eager (vita/model/attention.py) and flash-attn's
varlen path reads them directly. A sample's first label is set to -100: unpacked, the first token
is never predicted, so a packed row's loss is exactly the sum of its samples' losses. Media
features follow their placeholders in row-major order, so each stays with its sample.
"""

from __future__ import annotations

from vita.errors import DataError


def _first_fit(items: list[tuple[int, int]], max_length: int) -> tuple[list[list[int]], list[int]]:
    """``(index, length)`` pairs, in the given order, into the first row with room: (rows, room left)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i, n in items:
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
    return rows, room


def pack_rows(lengths: list[int], max_length: int) -> list[list[int]]:
    """First-fit: sample positions grouped into rows whose lengths sum to at most ``max_length``."""
    return _first_fit(list(enumerate(lengths)), max_length)[0]


def position_ids_for(lengths: list[int], row_length: int) -> list[int]:
    """0..n-1 for each sample, then 0.. for the padding tail."""
    out = [p for n in lengths for p in range(n)]
    return out + list(range(row_length - len(out)))


def pack_ffd(indices: list[int], lengths, max_length: int) -> list[list[int]]:
    """First-fit-decreasing: ``indices`` (by ``lengths[i]``, longest first, ties by position) into rows
    of at most ``max_length`` tokens; returns the rows, fullest first (ties by first placement)."""
    order = sorted(range(len(indices)), key=lambda k: (-int(lengths[indices[k]]), k))
    rows, room = _first_fit([(indices[k], int(lengths[indices[k]])) for k in order], max_length)
    return [rows[r] for r in sorted(range(len(rows)), key=lambda r: (room[r], r))]


def packed_plan(order, lengths, max_length: int, rows_per_micro: int, window: int) -> list[list[int]]:
    """Micro-batches (sample lists, row by row) from ``order``: FFD rows per window of ``window``
    samples, grouped ``rows_per_micro`` rows at a time (the last group of a window may be smaller)."""
    plan: list[list[int]] = []
    order = list(order)
    for s in range(0, len(order), window):
        rows = pack_ffd(order[s:s + window], lengths, max_length)
        for g in range(0, len(rows), rows_per_micro):
            plan.append([i for row in rows[g:g + rows_per_micro] for i in row])
    return plan
