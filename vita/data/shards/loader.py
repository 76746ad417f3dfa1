"""The step loader of ``format: shards``: the same interface as :class:`vita.data.loader.StepLoader`.

Rank ``r`` with ``k`` data workers owns streams ``r*k .. r*k+k-1``; its ``i``-th micro-batch of an
epoch is micro-batch ``i // k`` of stream ``r*k + i % k``. With workers, each one iterates its stream
(:class:`_RankStreams`) and the main process puts the micro-batches back in that order, so the
batches do not depend on which worker is faster. A position ``(epoch, step)`` fixes everything:
resuming needs nothing else (see vita/data/shards/plan.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vita.data.loader import Position, StepLoader, loader_generator
from vita.data.shards.plan import ShardPlan
from vita.data.shards.stream import SHARD_KIND, micro_batches

log = logging.getLogger(__name__)


def _ceil_div(a: int, b: int) -> int:
    return max(0, -(-a // b))


class _RankStreams(IterableDataset):
    """One worker's stream of this rank, from a start position on, across epochs: ``(epoch, i, micro_batch)``."""

    def __init__(self, plan: ShardPlan, proc, collate, rank: int, start: Position, timeout: float) -> None:
        self.plan, self.proc, self.collate, self.rank, self.start, self.timeout = (plan, proc, collate, rank, start,
                                                                                   timeout)

    def worker(self, w: int) -> Iterator[tuple[int, int, dict]]:
        plan, k = self.plan, self.plan.workers
        total = plan.steps_per_epoch * plan.accum
        epoch, i0 = self.start.epoch, self.start.step * plan.accum
        while True:
            first, end = _ceil_div(i0 - w, k), _ceil_div(total - w, k)
            mbs = micro_batches(plan, self.proc, self.collate, self.rank * k + w, epoch, first, end, self.timeout)
            for local, mb in enumerate(mbs, start=first):
                yield epoch, local * k + w, mb
            epoch, i0 = epoch + 1, 0

    def __iter__(self):
        info = get_worker_info()
        return self.worker(info.id if info is not None else 0)


class ShardLoader(StepLoader):
    """Iterate ``(position, micro_batches)`` from shard streams; ``position`` is the step those batches belong to.
    The bad-sample policy and the checkpointed state (position + the plan as ``sampler``) are StepLoader's."""

    def __init__(self, plan: ShardPlan, proc, collate, *, rank: int, num_workers: int = 0, on_bad_sample: str = "fail",
                 timeout: float = 60.0) -> None:
        self.sampler, self.plan, self.proc, self.collate = plan, plan, proc, collate
        self.rank, self.num_workers, self.on_bad_sample, self.timeout = rank, num_workers, on_bad_sample, timeout
        self.accum = plan.accum
        self.skipped: Counter = Counter()
        self.unread: dict[int, list[int]] = {}
        """``sampler: token_budget``: per epoch, ``[samples, tokens]`` this rank's streams left unread."""
        self._told: set[str] = set()
        self.position = Position()

    def _micro_batches(self, start: Position) -> Iterator[dict]:
        ds = _RankStreams(self.plan, self.proc, self.collate, self.rank, start, self.timeout)
        # its own generator, as the JSON path's: the global RNG (dropout) is left to the training loop
        dl = DataLoader(ds, batch_size=None, num_workers=self.num_workers, persistent_workers=False,
                        generator=loader_generator(self.plan.seed),
                        prefetch_factor=2 if self.num_workers else None)
        if self.num_workers == 0:
            for _epoch, _i, mb in dl:
                yield mb
            return
        pending: dict[tuple[int, int], dict] = {}
        want = (start.epoch, start.step * self.accum)
        total = self.plan.steps_per_epoch * self.accum
        for epoch, i, mb in dl:
            pending[(epoch, i)] = mb
            while want in pending:
                yield pending.pop(want)
                want = (want[0], want[1] + 1) if want[1] + 1 < total else (want[0] + 1, 0)

    def _epoch_end(self, epoch: int) -> None:  # say what the streams left unread
        if epoch in self.unread:
            samples, tokens = self.unread.pop(epoch)
            log.info("epoch %d: rank %d's %d stream(s) left %d sample(s) (%d tokens) unread so that every stream "
                     "ends the epoch at the same step (sampler token_budget: micro-batches per epoch counted from "
                     "the manifests' token totals; a larger data.shuffle_buffer or packing wastes less)", epoch,
                     self.rank, self.plan.workers, samples, tokens)

    def _check(self, mb: dict) -> None:
        if "unread" in mb:
            epoch, samples, tokens = mb.pop("unread")
            got = self.unread.setdefault(epoch, [0, 0])
            got[0], got[1] = got[0] + samples, got[1] + tokens
        super()._check(mb)

    def _warn(self, kind: str, msg: str) -> None:
        if kind != SHARD_KIND or msg not in self._told:  # a lost shard is said once, its samples all counted
            self._told.add(msg)
            log.warning("skipping %s", msg)
