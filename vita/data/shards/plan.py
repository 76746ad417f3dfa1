"""Which samples each (rank, data worker) stream reads, in which order: a pure function of the manifests,
the seed, the epoch and the stream, computed without reading a shard.

Per epoch and shard set: the set's shards (whole repeats for a ratio > 1, a seeded subset of whole
shards for the fraction) are shuffled by ``(seed, epoch, set)`` and dealt round-robin to the
``world x workers`` streams. A stream's samples are cut into *blocks* of about ``shuffle_buffer``
samples; block ``b`` takes positions ``[b*n_j//nb, (b+1)*n_j//nb)`` of each set ``j`` (a
deterministic interleave in proportion to the sets' sizes), and is emitted in the order of a
permutation seeded by ``(seed, epoch, stream, b)``. The buffer is thus drained at every block end,
so the stream position ``p`` (micro-batches consumed x micro-batch size) names one block and an
offset in it: resuming re-reads that block's raw bytes (no media decoded) and goes on.

Every stream yields the same number of micro-batches per epoch, from a lower bound of the samples
any stream can be dealt (the smallest shards), so all ranks end an epoch at the same step without
communicating; what that drops per epoch is logged.

``sampler: token_budget``: each block is cut into micro-batches of at most ``token_budget`` tokens by
the JSON sampler's own routines (vita.data.samplers.padded_plan, vita.data.packing.packed_plan), so a
block's micro-batch count depends on its lengths. The count per epoch comes from the manifests' token
totals instead: a stream dealt ``T`` tokens fills at least ``T // capacity`` micro-batches (each holds at
most ``capacity`` = the budget, or its whole rows when packing), ``T`` being the smallest token total any
stream can be dealt; the stream's micro-batches past that count are left unread (logged in tokens).
Resume replays the stream from the epoch start to count the micro-batches of the blocks before the
resume point from their samples' metadata (stream.budget_blocks): a local shard's tar headers and JSON
members, its media seeked over; a URL's bytes are streamed again. Its cost grows with the position in the
epoch (at most one epoch of this rank's streams' metadata), not with the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vita.data.shards import format as fmt
from vita.data.shards.reader import ShardError, is_url, join, read_json
from vita.errors import CheckpointError, ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass
class ShardSet:
    """One set's manifest and the shards of it that the config selects."""

    name: str
    base: str
    """Folder or URL prefix the shard names are relative to."""
    manifest_url: str
    manifest: dict
    shards: list[dict]
    ratio: float

    def url(self, i: int) -> str:
        return join(self.base, self.shards[i]["name"])

    @property
    def counts(self) -> np.ndarray:
        return np.array([sh["samples"] for sh in self.shards], dtype=np.int64)


def _parent(location: str) -> str:
    return location.rsplit("/", 1)[0] if is_url(location) else str(Path(location).parent)


def open_set(name: str, url: str, ratio: float, timeout: float) -> ShardSet:
    """Read one set's manifest (the only read at start-up) and select the shards ``url`` names."""
    if ratio < 0:
        raise DataError(f"shard set '{name}': ratio {ratio} must be >= 0")
    loc = url if is_url(url) else str(Path(url).expanduser())
    pattern = None
    if loc.endswith(".json"):
        man_url, base = loc, _parent(loc)
    elif "{" in loc or loc.endswith(".tar"):
        base, pattern = _parent(loc), loc.rsplit("/", 1)[-1]
        man_url = join(base, fmt.MANIFEST)
    else:
        base, man_url = loc, join(loc, fmt.MANIFEST)
    try:
        man = read_json(man_url, timeout)
    except ShardError as e:
        raise DataError(f"shard set '{name}': {e}; write the shards with python -m vita.data.shard or fix "
                        "data.shards.url") from None
    if man.get("format") != "vita-shards" or man.get("version") not in fmt.READ_VERSIONS:
        raise DataError(f"{man_url}: not a vita shard manifest of format version "
                        f"{' or '.join(map(str, fmt.READ_VERSIONS))} "
                        f"(found {man.get('format')!r} v{man.get('version')!r}); re-shard with python -m vita.data.shard")
    by_name = {fmt.check_member_name(sh["name"], man_url): sh for sh in man["shards"]}
    if pattern is None:
        shards = list(man["shards"])
    else:
        names = fmt.expand_braces(pattern)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise DataError(f"shard set '{name}': {', '.join(missing[:3])} not in {man_url} "
                            f"({len(by_name)} shards: {man['shards'][0]['name']} ...); fix data.shards.url")
        shards = [by_name[n] for n in names]
    if not shards:
        raise DataError(f"shard set '{name}': {man_url} lists no shard")
    return ShardSet(name, base, man_url, man, shards, float(ratio))


def check_fresh(sets: list[ShardSet], data_cfg, proc) -> None:
    """Refuse a manifest whose spec fingerprint differs from this run's: one line, the fields, the re-shard command."""
    now = fmt.fingerprint(data_cfg, proc)
    for st in sets:
        saved = st.manifest.get("fingerprint", {})
        fields = fmt.changed_fields(saved, now)
        if fields:
            out = st.base if not st.manifest_url.endswith(fmt.MANIFEST) else _parent(st.manifest_url)
            if "speech_codec" in fields and saved.get("speech_codec") is None:
                raise DataError(f"{st.manifest_url}: these shards were written without speech codes (by a model that "
                                f"does not speak), and this model speaks (codec {now['speech_codec']}); re-shard with "
                                f"the speaking model: {fmt.reshard_command(st.manifest, now, fields, out)}")
            raise DataError(f"{st.manifest_url} is stale: {fmt.describe_change(saved, now, fields)} since sharding; "
                            f"re-shard with: {fmt.reshard_command(st.manifest, now, fields, out)}")


class ShardPlan:
    """The sampler of ``format: shards``: steps per epoch, global batch and the order of every stream."""

    name = "shards"

    def __init__(self, sets: list[ShardSet], *, seed: int, world: int, workers: int, micro_batch_size: int,
                 grad_accum: int, shuffle_buffer: int, shuffle: bool = True, grouping: str | None = None,
                 token_budget: int = 0, packing: bool = False, max_length: int = 0, pack_window: int = 1024) -> None:
        self.sets, self.seed, self.world, self.workers = sets, seed, world, max(1, workers)
        self.micro, self.accum = micro_batch_size, grad_accum
        self.buffer = max(1, shuffle_buffer) if shuffle else 1
        self.shuffle = shuffle
        self.grouping = grouping
        """``None``, ``length``, ``modality`` (how each block's whole micro-batches are grouped, stream.grouped)
        or ``budget`` (each block cut into micro-batches of at most ``token_budget`` tokens, stream.budget_blocks)."""
        self.token_budget = token_budget if grouping == "budget" else 0
        self.row_length = (max_length or token_budget) if packing and self.token_budget else 0
        """Packed rows' length with a token budget (0: padded micro-batches, one sample per row)."""
        self.pack_window = max(1, pack_window) if self.row_length else 0
        if grouping == "budget":
            if token_budget < 1:
                raise ConfigError("data.sampler=token_budget needs data.token_budget >= 1 (tokens per micro-batch)")
            if self.row_length > token_budget:
                raise ConfigError(f"data.max_length={self.row_length} > data.token_budget={token_budget}: a packed "
                                  "micro-batch holds token_budget // max_length rows; raise the budget")
            limit = self.row_length or token_budget
            for st in sets:
                sh = max(st.shards, key=lambda sh: sh.get("longest", 0))
                if sh.get("longest", 0) > limit:
                    raise ConfigError(f"shard set '{st.name}': {st.url(st.shards.index(sh))} holds a sample of "
                                      f"{sh['longest']} tokens > data.{'max_length' if self.row_length else 'token_budget'}"
                                      f"={limit}, it fits no micro-batch; raise data.token_budget (or re-shard with a "
                                      "lower data.max_length)")
        self.rows_per_micro = token_budget // self.row_length if self.row_length else 0
        self.capacity = self.rows_per_micro * self.row_length if self.row_length else self.token_budget
        """Most tokens one micro-batch of the token budget can hold."""
        self.streams = world * self.workers
        self.global_batch_size = micro_batch_size * grad_accum * world
        self.micro_per_step = grad_accum * world
        low = low_tokens = 0
        for st in sets:
            k = self._epoch_len(st)
            if k and k < self.streams:
                raise ConfigError(f"shard set '{st.name}' has {k} shard(s) per epoch for {self.streams} streams "
                                  f"({world} rank(s) x {self.workers} data worker(s)); each stream needs its own "
                                  "shards: re-shard with a smaller --shard-size / --samples-per-shard")
            pool = np.sort(np.tile(st.counts, math.ceil(st.ratio) or 1))
            low += int(pool[:k // self.streams].sum())
            tokens = np.sort(np.tile([int(sh.get("tokens", 0)) for sh in st.shards], math.ceil(st.ratio) or 1))
            low_tokens += int(tokens[:k // self.streams].sum())
        self.stream_samples = low
        """Samples every stream can count on in any epoch (a lower bound)."""
        self.stream_tokens = low_tokens
        """Tokens every stream can count on in any epoch (a lower bound, for the token budget)."""
        self.micro_per_stream = low_tokens // self.capacity if self.token_budget else low // micro_batch_size
        self.steps_per_epoch = self.workers * self.micro_per_stream // grad_accum
        total = sum(int(self._epoch_counts(st, 0).sum()) for st in sets)
        if self.steps_per_epoch < 1 and self.token_budget:
            raise ConfigError(f"the shard sets give each of the {self.streams} streams at least {low_tokens} tokens per "
                              f"epoch, not one step of {grad_accum} micro-batch(es) of data.token_budget={token_budget}"
                              " tokens; lower the budget, use fewer data workers or re-shard into smaller shards")
        if self.steps_per_epoch < 1:
            raise ConfigError(f"the shard sets give each of the {self.streams} streams {low} samples per epoch, "
                              f"not one step of {grad_accum} micro-batch(es) of {micro_batch_size}; lower the batch, "
                              "use fewer data workers or re-shard into smaller shards")
        self.samples_per_epoch = self.steps_per_epoch * self.global_batch_size
        self.dropped = total - self.samples_per_epoch
        """Samples of epoch 0 left unread so that every stream ends the epoch at the same step (token budget:
        not known before reading, see ``tokens_dropped``)."""
        self.tokens_per_epoch = self.steps_per_epoch * self.micro_per_step * self.capacity
        """Token budget: tokens the epoch's micro-batches can hold at most."""
        self.tokens_dropped = max(0, sum(int(sh.get("tokens", 0)) for st in sets for sh in
                                         (st.shards[i] for i in self.epoch_shards(sets.index(st), 0)))
                                  - self.tokens_per_epoch)
        """Token budget: tokens of epoch 0 at least left unread (past each stream's micro-batch count)."""

    # -- per epoch ---------------------------------------------------------------------------------------
    @staticmethod
    def _epoch_len(st: ShardSet) -> int:
        return len(st.shards) * int(st.ratio) + int(len(st.shards) * (st.ratio - int(st.ratio)))

    def _epoch_counts(self, st: ShardSet, epoch: int) -> np.ndarray:
        return st.counts[self.epoch_shards(self.sets.index(st), epoch)]

    def epoch_shards(self, j: int, epoch: int) -> np.ndarray:
        """Set ``j``'s shard indices in epoch ``epoch`` (ratio applied, shuffled unless sequential)."""
        st = self.sets[j]
        n, r = len(st.shards), st.ratio
        parts = [np.tile(np.arange(n), int(r))]
        frac = int(n * (r - int(r)))
        if frac:
            parts.append(np.sort(np.random.default_rng([self.seed, epoch, j, 1]).permutation(n)[:frac]))
        order = np.concatenate(parts).astype(np.int64)
        if self.shuffle:
            order = order[np.random.default_rng([self.seed, epoch, j]).permutation(len(order))]
        return order

    def stream_shards(self, epoch: int, stream: int) -> list[np.ndarray]:
        """Per set, the shards stream ``stream`` reads in ``epoch``, in order."""
        return [self.epoch_shards(j, epoch)[stream::self.streams] for j in range(len(self.sets))]

    def block_perm(self, epoch: int, stream: int, block: int, size: int) -> np.ndarray:
        if self.buffer <= 1 or size <= 1:
            return np.arange(size)
        return np.random.default_rng([self.seed, epoch, stream, block]).permutation(size)

    # -- state -------------------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        sets = [[st.name, st.ratio, [[sh["name"], sh["samples"], sh["bytes"]] for sh in st.shards],
                 st.manifest.get("source")] for st in self.sets]
        return hashlib.sha256(json.dumps(sets).encode()).hexdigest()[:16]

    def state_dict(self) -> dict:
        return {"sampler": self.name, "seed": self.seed, "global_batch_size": self.global_batch_size,
                "micro_batch_size": self.micro, "shuffle_buffer": self.buffer, "shuffle": self.shuffle,
                "grouping": self.grouping, **({"token_budget": self.token_budget, "row_length": self.row_length,
                                               "pack_window": self.pack_window} if self.token_budget else {}),
                "shards": self.fingerprint(), "world": self.world, "workers": self.workers}

    def load_state_dict(self, state: dict) -> None:
        """Raise if the order cannot be continued; warn (saying what differs) when only the stream count changed."""
        mine = self.state_dict()
        diff = [f"{k}: saved {state.get(k)!r}, now {v!r}" for k, v in mine.items()
                if k not in ("world", "workers") and k in state and state[k] != v]
        if diff:
            raise CheckpointError("the shard stream cannot be resumed exactly, it changed (" + "; ".join(diff)
                                  + "); restore the data config or start a new run (name=...)")
        if (state.get("world"), state.get("workers")) != (self.world, self.workers):
            log.warning("resuming a shard stream saved with %s rank(s) x %s data worker(s) on %d x %d: the shards are "
                        "dealt to %d streams instead of %d, so from this step on the samples and their order differ "
                        "from an uninterrupted run's (the rest of this epoch restarts at the saved step of the new "
                        "dealing: some samples of the epoch may be seen twice or not at all)",
                        state.get("world"), state.get("workers"), self.world, self.workers, self.streams,
                        (state.get("world") or 1) * (state.get("workers") or 1))


class StreamEpoch:
    """The sample order of one stream in one epoch: blocks, and where a stream position falls."""

    def __init__(self, plan: ShardPlan, epoch: int, stream: int) -> None:
        self.plan, self.epoch, self.stream = plan, epoch, stream
        self.shards = plan.stream_shards(epoch, stream)
        self.counts = [plan.sets[j].counts[s] for j, s in enumerate(self.shards)]
        self.n = [int(c.sum()) for c in self.counts]
        total = sum(self.n)
        self.blocks = max(1, math.ceil(total / plan.buffer))

    def bounds(self, b: int) -> list[tuple[int, int]]:
        """Per set, the positions ``[a, e)`` block ``b`` takes."""
        return [(b * n // self.blocks, (b + 1) * n // self.blocks) for n in self.n]

    def start(self, b: int) -> int:
        return sum(b * n // self.blocks for n in self.n)

    def locate(self, p: int) -> tuple[int, int]:
        """``(block, offset)`` of stream position ``p``."""
        lo, hi = 0, self.blocks - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.start(mid) <= p:
                lo = mid
            else:
                hi = mid - 1
        return lo, p - self.start(lo)
