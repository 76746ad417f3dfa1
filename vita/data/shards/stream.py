"""Reading one stream's samples in the plan's order and turning them into micro-batches.

:class:`SetCursor` walks one set's shards of a stream front to back (a shard is opened once and
read to its end; a jump, only at resume, reopens the shard and passes over the members before).
A shard that fails (:class:`~vita.data.shards.reader.ShardError`) turns its remaining samples into
bad samples with the URL and the reason: the loader applies ``data.on_bad_sample`` to them (``fail``
stops, ``skip`` counts them under ``unreadable shard`` and goes on with the next shard).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from vita.data.media import StoredFrames
from vita.data.packing import packed_plan
from vita.data.samplers import padded_plan
from vita.data.schema import BadSample
from vita.data.shards.plan import ShardPlan, StreamEpoch
from vita.data.shards.reader import Member, RawSample, ShardError, iter_samples
from vita.errors import DataError

SHARD_KIND = "unreadable shard"


@dataclass
class Lost:
    """A sample of a shard that could not be read."""

    key: str
    message: str


class SetCursor:
    """Positions ``0..n-1`` of one set's samples in one stream-epoch (its shards in order)."""

    def __init__(self, plan: ShardPlan, j: int, shards: np.ndarray, counts: np.ndarray, timeout: float,
                 meta_only: bool = False) -> None:
        self.set, self.shards, self.timeout, self.meta_only = plan.sets[j], shards, timeout, meta_only
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.pos = -1  # next position the open shard yields (-1: none open)
        self.it: Iterator[RawSample] | None = None
        self.t = -1  # index (into self.shards) of the open shard
        self.broken: str | None = None

    def _open(self, p: int) -> None:
        if self.it is not None:
            self.it.close()
        self.t = int(np.searchsorted(self.starts, p, side="right") - 1)
        skip = p - int(self.starts[self.t])
        self.url = self.set.url(int(self.shards[self.t]))
        self.it, self.pos, self.broken = iter_samples(self.url, self.timeout, skip, self.meta_only), p, None

    def take(self, a: int, e: int) -> list[tuple[str, RawSample | Lost]]:
        """Samples at positions ``a..e-1`` as ``(shard url, sample)``."""
        out = []
        for p in range(a, e):
            if p != self.pos or p >= self.starts[self.t + 1]:
                self._open(p)
            out.append((self.url, self._next(p)))
            self.pos = p + 1
        return out

    def _next(self, p: int) -> RawSample | Lost:
        key = f"{self.url}#{p - int(self.starts[self.t])}"
        if self.broken is None:
            try:
                return next(self.it)
            except StopIteration:
                n = int(self.starts[self.t + 1] - self.starts[self.t])
                self.broken = (f"{self.url}: {SHARD_KIND}: the shard ended after {p - int(self.starts[self.t])} of "
                               f"its {n} samples (truncated?); the rest of it is lost, re-shard or restore the file")
            except ShardError as e:
                self.broken = f"{e.url}: {SHARD_KIND}: {e.detail}; the rest of this shard is lost"
        return Lost(key, self.broken)

    def close(self) -> None:
        if self.it is not None:
            self.it.close()
            self.it = None


def decode(proc, url: str, raw: RawSample | Lost) -> dict:
    """The training item of one stored sample (media decoded from the member bytes, a video's stored frames
    read instead of decoding it), or a bad one."""
    if isinstance(raw, Lost):
        return {"id": raw.key, "bad": (SHARD_KIND, raw.message)}
    meta = raw.meta
    try:
        s = proc.parse(meta["record"], meta["where"], {}, check_files=False)
        for mod, names in meta.get("media", {}).items():
            missing = [n for n in names if n not in raw.media]
            if missing:
                raise BadSample("missing member", meta["where"], s.id, f"{url} lacks {missing[0]}; re-shard")
            s.media[mod] = [Member(raw.media[n], f"{url}#{n}") for n in names]
            if mod == "video" and meta.get("video_frames"):
                s.media[mod] = [StoredFrames(m, meta["video_frames"]) for m in s.media[mod]]
        return proc.load_sample(s, speech_codes=stored_codes(url, raw, s))
    except BadSample as e:
        return {"id": e.sample_id or e.where, "bad": (e.kind, str(e))}


def stored_codes(url: str, raw: RawSample, s) -> list | None:
    """The spoken answers' codes stored with a sample (``None`` when it has none); a shard written without them
    raises ``BadSample``."""
    if not s.speech:
        return None
    names = raw.meta.get("speech")
    if not names:
        raise BadSample("missing member", raw.meta["where"], s.id, f"{url} holds no speech codes for this sample's "
                        "spoken answer (written by a model that does not speak); re-shard with the speaking model")
    missing = [n for n in names if n not in raw.media]
    if missing:
        raise BadSample("missing member", raw.meta["where"], s.id, f"{url} lacks {missing[0]}; re-shard")
    return [np.load(io.BytesIO(raw.media[n]), allow_pickle=False) for n in names]


def _meta(x) -> tuple[bool, int]:
    raw = x[1]
    return (False, 0) if isinstance(raw, Lost) else (bool(raw.meta.get("multimodal")), int(raw.meta.get("length", 0)))


def grouped(order: list, plan: ShardPlan, epoch: int, stream: int, block: int, start: int) -> list:
    """A block's emitted order regrouped so that its whole micro-batches each hold one modality (``modality``)
    and samples of similar length, longest first (``length``), in a seeded random order of micro-batches.

    ``start`` is the block's first stream position: the samples that complete the micro-batch begun in the
    previous block stay first, the ones that begin the next block's stay last, so the count per block (and
    hence every position after it) is unchanged; the grouping reads only the block's own metadata, so a
    replay at resume gives it again."""
    m = plan.micro
    head = (m - start % m) % m
    body, rest = order[:head], order[head:]
    tail = len(rest) % m
    keys = [_meta(x) for x in rest]
    groups: dict[bool, list[int]] = {}
    for k, (mm, _n) in enumerate(keys):
        groups.setdefault(mm if plan.grouping == "modality" else False, []).append(k)
    chunks, mixed = [], []
    for flag in sorted(groups):
        idx = sorted(groups[flag], key=lambda k: -keys[k][1])  # stable: ties keep the seeded order
        full = len(idx) // m * m
        chunks += [idx[c:c + m] for c in range(0, full, m)]
        mixed += idx[full:]
    mixed.sort(key=lambda k: -keys[k][1])
    cut = len(mixed) - tail
    chunks += [mixed[c:c + m] for c in range(0, cut, m)]
    rng = np.random.default_rng([plan.seed, epoch, stream, block, 1])
    chunks = [chunks[i] for i in rng.permutation(len(chunks))] if plan.buffer > 1 else chunks
    return body + [rest[k] for ch in chunks for k in ch] + [rest[k] for k in mixed[cut:]]


def budget_groups(order: list, plan: ShardPlan, epoch: int, stream: int, block: int) -> list[list[int]]:
    """A block's micro-batches of at most ``plan.token_budget`` tokens, as positions in its emitted order:
    the JSON ``token_budget`` sampler's routines on the block (padded: sorted by length, cut at ``count x
    longest``; packing: first-fit-decreasing rows of ``row_length``, ``rows_per_micro`` per micro-batch),
    in a seeded random order of micro-batches. A lost sample counts 0 tokens."""
    lens = np.array([_meta(x)[1] for x in order], dtype=np.int64)
    limit = plan.row_length or plan.token_budget
    over = np.flatnonzero(lens > limit)
    if len(over):
        url, raw = order[int(over[0])]
        raise DataError(f"{url}#{raw.key} ({raw.meta.get('where')}, sample {raw.meta.get('id')}): {lens[over[0]]} "
                        f"tokens > data.{'max_length' if plan.row_length else 'token_budget'}={limit}, it fits no "
                        "micro-batch; raise data.token_budget (or re-shard with a lower data.max_length)")
    if plan.row_length:
        groups = packed_plan(range(len(order)), lens, plan.row_length, plan.rows_per_micro, plan.pack_window)
    else:
        groups = padded_plan(np.argsort(lens, kind="stable").tolist(), lens, plan.token_budget)
    if plan.buffer > 1:
        groups = [groups[i] for i in np.random.default_rng([plan.seed, epoch, stream, block, 2]).permutation(len(groups))]
    return groups


def budget_blocks(plan: ShardPlan, epoch: int, stream: int, timeout: float,
                  first: int = 0) -> Iterator[tuple[list, list[list[int]]]]:
    """Per block of ``stream`` in ``epoch``: its raw samples in emitted order and their micro-batches
    (:func:`budget_groups`); nothing is decoded. The blocks whose micro-batches all come before the stream's
    micro-batch ``first`` (a resume's replay) are read for their metadata alone (local shards: tar headers and
    JSON members, media seeked over) and yielded without media."""
    se = StreamEpoch(plan, epoch, stream)
    cursors: dict[bool, list[SetCursor]] = {
        meta: [SetCursor(plan, j, se.shards[j], se.counts[j], timeout, meta) for j in range(len(plan.sets))]
        for meta in (False, True)}

    def read(b: int, meta: bool) -> tuple[list, list[list[int]]]:
        block = [x for j, (a, e) in enumerate(se.bounds(b)) for x in cursors[meta][j].take(a, e)]
        order = [block[k] for k in plan.block_perm(epoch, stream, b, len(block))]
        return order, budget_groups(order, plan, epoch, stream, b)

    i = 0  # the stream's index of block b's first micro-batch
    try:
        for b in range(se.blocks):
            order, groups = read(b, True) if i < first else (None, None)
            if groups is None or i + len(groups) > first:
                order, groups = read(b, False)
            yield order, groups
            i += len(groups)
    finally:
        for c in (*cursors[False], *cursors[True]):
            c.close()


def _budget_micro_batches(plan: ShardPlan, proc, collate, stream: int, epoch: int, first: int, end: int,
                          timeout: float) -> Iterator[dict]:
    """Token-budget micro-batches ``first..end-1``: the blocks before ``first`` are read only to count theirs
    (the replay of a resume); a stream short of ``end`` (lost samples count 0 tokens) ends with empty ones.
    The micro-batch ``end - 1`` carries ``unread``: ``(epoch, samples, tokens)`` of the stream-epoch left
    unread past ``end`` (the loader logs them)."""
    se = StreamEpoch(plan, epoch, stream)
    samples = sum(se.n)
    tokens = sum(int(plan.sets[j].shards[int(i)].get("tokens", 0)) for j, sh in enumerate(se.shards) for i in sh)
    i = 0  # the stream's index of the block's first micro-batch
    blocks = budget_blocks(plan, epoch, stream, timeout, first)
    try:
        for order, groups in blocks:
            if i >= end:
                break
            for n, g in enumerate(groups[:end - i], start=i):
                samples -= len(g)
                tokens -= sum(_meta(order[k])[1] for k in g)
                if n >= first:
                    mb = collate([decode(proc, *order[k]) for k in g])
                    if n == end - 1:
                        mb["unread"] = (epoch, samples, tokens)
                    yield mb
            i += len(groups)
    finally:
        blocks.close()
    for n in range(max(first, i), end):
        mb = collate([])
        if n == end - 1:
            mb["unread"] = (epoch, samples, tokens)
        yield mb


def micro_batches(plan: ShardPlan, proc, collate, stream: int, epoch: int, first: int, end: int,
                  timeout: float) -> Iterator[dict]:
    """Collated micro-batches ``first..end-1`` of ``stream`` in ``epoch`` (each ``plan.micro`` samples, or
    at most ``plan.token_budget`` tokens)."""
    if plan.token_budget:
        yield from _budget_micro_batches(plan, proc, collate, stream, epoch, first, end, timeout)
        return
    se = StreamEpoch(plan, epoch, stream)
    cursors = [SetCursor(plan, j, se.shards[j], se.counts[j], timeout) for j in range(len(plan.sets))]
    p, stop = first * plan.micro, end * plan.micro
    b, off = se.locate(p)
    items: list[dict] = []
    try:
        while p < stop and b < se.blocks:
            block = [x for j, (a, e) in enumerate(se.bounds(b)) for x in cursors[j].take(a, e)]
            order = [block[k] for k in plan.block_perm(epoch, stream, b, len(block))]
            if plan.grouping:
                order = grouped(order, plan, epoch, stream, b, se.start(b))
            for x in order[off:]:
                if p >= stop:
                    break
                items.append(decode(proc, *x))
                p += 1
                if len(items) == plan.micro:
                    yield collate(items)
                    items = []
            b, off = b + 1, 0
    finally:
        for c in cursors:
            c.close()
