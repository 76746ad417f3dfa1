"""Samplers: which sample indices make up each step's micro-batches.

A sampler is a pure function of ``(epoch, step)``: resuming needs only the loader's position and
the sampler's :meth:`~GlobalBatchSampler.state_dict` (its settings and a fingerprint of the
lengths it grouped by), so the data order after a restart is exactly that of an uninterrupted
run. ``micro_batches(epoch, step)`` returns ``world x grad_accum`` index lists; the loader gives
each rank its consecutive ``grad_accum`` of them.

Lengths come from metadata (tokens after media expansion, computed without decoding media).
"""

from __future__ import annotations

import hashlib

import numpy as np

from vita.errors import CheckpointError, ConfigError
from vita.registry import SAMPLERS


class GlobalBatchSampler:
    """Base: fixed-size global batches cut into ``micro_per_step`` equal micro-batches."""

    name = "base"

    def __init__(self, num_samples: int, global_batch_size: int, seed: int = 0, micro_per_step: int = 1,
                 lengths=None, modalities=None, token_budget: int = 0, packing: bool = False, max_length: int = 0,
                 pack_window: int = 1024) -> None:
        """``token_budget``, ``packing``, ``max_length``, ``pack_window``: the ``cfg.data`` keys every sampler is
        given (:data:`DATA_OPTIONS`); only :class:`TokenBudgetSampler` cuts by them. Any other key is refused."""
        if num_samples < global_batch_size:
            raise ConfigError(
                f"{num_samples} samples cannot fill one global batch of {global_batch_size} "
                "(engine.micro_batch_size x engine.grad_accum x world size); lower the batch or add data"
            )
        if global_batch_size % micro_per_step:
            raise ConfigError(f"global batch {global_batch_size} is not a multiple of {micro_per_step} micro-batches")
        self.num_samples, self.global_batch_size, self.seed = num_samples, global_batch_size, seed
        self.micro_per_step = micro_per_step
        self.lengths = np.asarray(lengths if lengths is not None else np.ones(num_samples), dtype=np.int64)
        self.modalities = np.asarray(modalities if modalities is not None else np.zeros(num_samples), dtype=bool)
        self._cache: tuple[int, object] | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Full global batches per epoch (the remainder is dropped, differently each epoch)."""
        return self.num_samples // self.global_batch_size

    def rng(self, epoch: int, *extra: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, *extra])

    def order(self, epoch: int) -> np.ndarray:
        raise NotImplementedError

    def _order(self, epoch: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self.order(epoch))
        return self._cache[1]

    def batch(self, epoch: int, step: int) -> list[int]:
        """All indices of step ``step`` of ``epoch`` (every rank, every micro-batch)."""
        return [i for mb in self.micro_batches(epoch, step) for i in mb]

    def micro_batches(self, epoch: int, step: int) -> list[list[int]]:
        g, k = self.global_batch_size, self.micro_per_step
        flat = self._order(epoch)[step * g:(step + 1) * g].tolist()
        m = g // k
        return [flat[j * m:(j + 1) * m] for j in range(k)]

    # -- state ------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        h = hashlib.sha256(self.lengths.tobytes())
        h.update(self.modalities.tobytes())
        return h.hexdigest()[:16]

    def state_dict(self) -> dict:
        """Everything the order depends on besides the position (which the loader keeps)."""
        return {"sampler": self.name, "seed": self.seed, "num_samples": self.num_samples,
                "global_batch_size": self.global_batch_size, "micro_per_step": self.micro_per_step,
                "lengths": self.fingerprint()}

    def load_state_dict(self, state: dict) -> None:
        """Check that this sampler reproduces the saved order; raise naming what changed."""
        mine = self.state_dict()
        diff = [f"{k}: saved {state.get(k)!r}, now {v!r}" for k, v in mine.items() if k in state and state[k] != v]
        if diff:
            raise CheckpointError("the data order cannot be resumed exactly, the sampler changed (" + "; ".join(diff)
                                  + "); restore the data config or start a new run (name=...)")


class SequentialSampler(GlobalBatchSampler):
    name = "sequential"

    def order(self, epoch: int) -> np.ndarray:
        return np.arange(self.num_samples)


class RandomSampler(GlobalBatchSampler):
    """A fresh permutation each epoch, seeded by ``(seed, epoch)``."""

    name = "random"

    def order(self, epoch: int) -> np.ndarray:
        return self.rng(epoch).permutation(self.num_samples)


def _split_balanced(idx: list[int], lengths: np.ndarray, k: int) -> list[list[int]]:
    """Longest first, each to the chunk with the smallest total so far (at most len/k per chunk)."""
    cap = len(idx) // k
    chunks: list[list[int]] = [[] for _ in range(k)]
    totals = [0] * k
    for i in sorted(idx, key=lambda i: -lengths[i]):
        j = min((c for c in range(k) if len(chunks[c]) < cap), key=lambda c: totals[c])
        chunks[j].append(i)
        totals[j] += int(lengths[i])
    return chunks


class LengthGroupedSampler(GlobalBatchSampler):
    """VITA/LLaVA megabatches: a random permutation cut into global batches; within each, samples
    sorted by length and dealt to micro-batches so their token totals balance."""

    name = "length_grouped"

    def megabatches(self, idx: np.ndarray) -> list[list[int]]:
        g = self.global_batch_size
        return [idx[s:s + g].tolist() for s in range(0, len(idx), g)]

    def order(self, epoch: int) -> list[list[int]]:
        return self.megabatches(self.rng(epoch).permutation(self.num_samples))

    def micro_batches(self, epoch: int, step: int) -> list[list[int]]:
        mega = self._order(epoch)[step]
        return _split_balanced(mega, self.lengths, self.micro_per_step)


class ModalityLengthGroupedSampler(LengthGroupedSampler):
    """VITA's modality-length grouping: megabatches hold only multimodal or only text samples;
    the two partial megabatches are merged into one mixed batch placed last. Works with one
    modality only (LLaVA #715)."""

    name = "modality_length_grouped"

    def order(self, epoch: int) -> list[list[int]]:
        rng = self.rng(epoch)
        g = self.global_batch_size
        full, rest = [], []
        for flag in (True, False):
            side = np.flatnonzero(self.modalities == flag)
            mb = self.megabatches(side[rng.permutation(len(side))])
            if mb and len(mb[-1]) < g:
                rest.extend(mb.pop())
            full.extend(mb)
        full = [full[i] for i in rng.permutation(len(full))]
        if len(rest) >= g:
            full.append(sorted(rest, key=lambda i: -self.lengths[i])[:g])
        return full


def padded_plan(order, lengths, token_budget: int) -> list[list[int]]:
    """Micro-batches (unpacked rows) from ``order``, sorted by length: cut greedily so that each one's cost,
    ``count x longest``, stays within ``token_budget`` (the ``token_budget`` sampler without packing; the
    shard stream applies it to each shuffle buffer)."""
    plan: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        n = int(lengths[i])
        if cur and (len(cur) + 1) * n > token_budget:
            plan.append(cur)
            cur = []
        cur.append(i)
    if cur:
        plan.append(cur)
    return plan


class TokenBudgetSampler(GlobalBatchSampler):
    """Micro-batches filled up to ``token_budget`` tokens. The micro-batches are fixed for a seed;
    each epoch shuffles their order, so every epoch has the same number of steps.

    Padding (``packing`` off): samples sorted by length (ties broken by seed) are cut greedily into
    micro-batches whose cost ``count x longest`` stays within the budget.
    Packing: the samples, shuffled by seed, are packed across the batch into rows of ``max_length``
    (first-fit-decreasing over windows of ``pack_window`` samples, vita.data.packing.packed_plan),
    ``token_budget // max_length`` rows per micro-batch (``max_length`` 0: one row of the budget).
    """

    name = "token_budget"

    def __init__(self, num_samples: int, global_batch_size: int, seed: int = 0, micro_per_step: int = 1,
                 lengths=None, modalities=None, token_budget: int = 0, packing: bool = False, max_length: int = 0,
                 pack_window: int = 1024) -> None:
        if token_budget < 1:
            raise ConfigError("sampler token_budget needs data.token_budget >= 1 (tokens per micro-batch)")
        super().__init__(num_samples, micro_per_step, seed, micro_per_step, lengths, modalities)
        self.global_batch_size = global_batch_size
        self.token_budget, self.packing = token_budget, packing
        self.row_length = (max_length or token_budget) if packing else 0
        self.pack_window = pack_window if packing else 0
        too_long = int(self.lengths.max(initial=0))
        if too_long > token_budget:
            raise ConfigError(f"a sample has {too_long} tokens > data.token_budget={token_budget}; raise the budget")
        if packing:
            if self.row_length > token_budget:
                raise ConfigError(f"data.max_length={self.row_length} > data.token_budget={token_budget}: a packed "
                                  "micro-batch holds token_budget // max_length rows; raise the budget")
            from vita.data.packing import packed_plan

            order = np.random.default_rng([seed, 7]).permutation(num_samples)
            self.plan = packed_plan(order.tolist(), self.lengths, self.row_length,
                                    token_budget // self.row_length, max(1, pack_window))
        else:
            tie = np.random.default_rng([seed, 7]).permutation(num_samples)
            self.plan = padded_plan(np.lexsort((tie, self.lengths)).tolist(), self.lengths, token_budget)
        if len(self.plan) < micro_per_step:
            raise ConfigError(f"{len(self.plan)} micro-batches of data.token_budget={token_budget} tokens cannot fill "
                              f"one step of {micro_per_step}; lower the budget or add data")

    @property
    def steps_per_epoch(self) -> int:
        return len(self.plan) // self.micro_per_step

    def order(self, epoch: int) -> np.ndarray:
        return self.rng(epoch).permutation(len(self.plan))

    def micro_batches(self, epoch: int, step: int) -> list[list[int]]:
        k = self.micro_per_step
        return [list(self.plan[j]) for j in self._order(epoch)[step * k:(step + 1) * k]]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "token_budget": self.token_budget, "packing": self.packing,
                "row_length": self.row_length, "pack_window": self.pack_window}


# The classes themselves are registered: their signatures are the options they take, and an option
# none of them names is refused (Registry.build / check_options name it) rather than ignored.
SAMPLERS.register("random")(RandomSampler)
SAMPLERS.register("sequential")(SequentialSampler)
SAMPLERS.register("length_grouped")(LengthGroupedSampler)
SAMPLERS.register("modality_length_grouped")(ModalityLengthGroupedSampler)
SAMPLERS.register("token_budget")(TokenBudgetSampler)

DATA_OPTIONS = ("token_budget", "packing", "max_length", "pack_window")
"""``cfg.data`` keys every sampler is given."""


def sampler_options(data_cfg) -> dict:
    """The keyword options ``data.sampler`` is built with: the ``cfg.data`` keys of :data:`DATA_OPTIONS`, then
    ``data.sampler_options``; an option the sampler does not take is a :class:`ConfigError` naming the key."""
    extra = dict(data_cfg.get("sampler_options") or {})
    SAMPLERS.check_options(data_cfg.sampler, extra, "data.sampler_options")
    return {**{k: data_cfg[k] for k in DATA_OPTIONS}, **extra}
