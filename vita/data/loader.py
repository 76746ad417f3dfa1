"""Per-rank step loader: a step's micro-batches -> this rank's ``grad_accum`` of them.

Bad samples found while loading (a file that fails to decode) reach the main process as
``batch["skipped"]``: under ``fail`` the loader raises with the sample's location and reason,
under ``skip`` it counts them per reason (:attr:`StepLoader.skipped`) and the step goes on with
the remaining samples; a bad sample is never replaced by another.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from vita.data.samplers import GlobalBatchSampler
from vita.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class Position:
    """Where the data stream is: the next step to load (``epoch``, ``step`` within it)."""

    epoch: int = 0
    step: int = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step}


def loader_generator(seed: int) -> torch.Generator:
    """The generator a DataLoader draws its workers' base seed from, seeded by ``train.seed``.

    Without one, every new DataLoader iterator takes that draw from torch's global RNG. A resumed run
    restores the global RNG and only then starts its loader, so the draw would shift the RNG stream
    (dropout, hence the losses) against the run that was never stopped, whose draw came before step 1."""
    return torch.Generator().manual_seed(int(seed))


def rank_micro_batches(sampler: GlobalBatchSampler, epoch: int, step: int, rank: int, world: int,
                       accum: int) -> list[list[int]]:
    """The ``accum`` micro-batches (index lists) of ``rank`` at ``(epoch, step)``."""
    n = world * accum
    mbs = sampler.micro_batches(epoch, step)
    if len(mbs) != n:  # a sampler that cut the batch differently: re-cut it evenly
        flat = [i for mb in mbs for i in mb]
        m = len(flat) // n
        mbs = [flat[j * m:(j + 1) * m] for j in range(n)]
    return mbs[rank * accum:(rank + 1) * accum]


class _MicroBatchIndices:
    """Index lists of this rank's micro-batches, from a start position on, across epochs."""

    def __init__(self, sampler: GlobalBatchSampler, rank: int, world: int, accum: int, start: Position):
        self.sampler, self.rank, self.world, self.accum, self.start = sampler, rank, world, accum, start

    def __iter__(self) -> Iterator[list[int]]:
        epoch, step = self.start.epoch, self.start.step
        while True:
            while step < self.sampler.steps_per_epoch:
                yield from rank_micro_batches(self.sampler, epoch, step, self.rank, self.world, self.accum)
                step += 1
            epoch, step = epoch + 1, 0


class StepLoader:
    """Iterate ``(position, micro_batches)``; ``position`` is the step those batches belong to."""

    def __init__(self, dataset: Dataset, sampler: GlobalBatchSampler, collate, *, rank: int, world: int,
                 micro_batch_size: int, grad_accum: int, num_workers: int = 0, on_bad_sample: str = "fail") -> None:
        self.dataset, self.sampler, self.collate = dataset, sampler, collate
        self.rank, self.world, self.micro, self.accum, self.num_workers = rank, world, micro_batch_size, grad_accum, num_workers
        self.on_bad_sample = on_bad_sample
        self.skipped: Counter = Counter()
        self.position = Position()

    def iterate(self, start: Position) -> Iterator[tuple[Position, list[dict]]]:
        if start.step >= self.sampler.steps_per_epoch:  # e.g. saved with fewer ranks (more steps per epoch)
            start = Position(start.epoch + 1, 0)
        pos = Position(start.epoch, start.step)
        group: list[dict] = []
        for mb in self._micro_batches(start):
            self._check(mb)
            group.append(mb)
            if len(group) == self.accum:
                yield Position(pos.epoch, pos.step), group
                group = []
                pos.step += 1
                if pos.step == self.sampler.steps_per_epoch:
                    self._epoch_end(pos.epoch)
                    pos.epoch, pos.step = pos.epoch + 1, 0
                self.position = Position(pos.epoch, pos.step)

    def _micro_batches(self, start: Position) -> Iterator[dict]:
        """This rank's micro-batches from ``start`` on, across epochs."""
        indices = _MicroBatchIndices(self.sampler, self.rank, self.world, self.accum, start)
        return iter(DataLoader(self.dataset, batch_sampler=indices, collate_fn=self.collate,
                               num_workers=self.num_workers, persistent_workers=False,
                               generator=loader_generator(self.sampler.seed),
                               prefetch_factor=4 if self.num_workers else None))

    def _epoch_end(self, epoch: int) -> None:
        """Called once the last step of ``epoch`` is handed out."""

    def _check(self, mb: dict) -> None:
        for _sid, kind, msg in mb.get("skipped", []):
            if self.on_bad_sample == "fail":
                raise DataError(f"{msg} (set data.on_bad_sample=skip to drop such samples, or run python -m vita.check)")
            self.skipped[kind] += 1
            self._warn(kind, msg)

    def _warn(self, kind: str, msg: str) -> None:
        log.warning("skipping %s", msg)

    def step_done(self, position: Position) -> None:
        """The step at ``position`` is trained: the next position to load is the one after it (what
        :meth:`state_dict` records; iterating further records it too)."""
        nxt = Position(position.epoch, position.step + 1)
        self.position = nxt if nxt.step < self.sampler.steps_per_epoch else Position(position.epoch + 1, 0)

    def state_dict(self) -> dict:
        """The data stream's whole resume state: the next position to load, the sampler's settings and the
        bad samples skipped so far (per reason)."""
        return {"position": self.position.state_dict(), "sampler": self.sampler.state_dict(),
                "bad_samples_loaded": dict(self.skipped)}

    def load_state_dict(self, state: dict) -> Position:
        """Check the sampler against ``state``; returns the position to pass to :meth:`iterate`."""
        if "sampler" in state:
            self.sampler.load_state_dict(state["sampler"])
        self.position = Position(**state["position"])
        self.skipped = Counter(state.get("bad_samples_loaded", {}))
        return self.position
