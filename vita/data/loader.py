"""Per-rank step loader: global batch -> this rank's slice -> ``grad_accum`` micro-batches."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch.utils.data import DataLoader, Dataset

from vita.data.samplers import GlobalBatchSampler


@dataclass
class Position:
    """Where the data stream is: the next step to load (``epoch``, ``step`` within it)."""

    epoch: int = 0
    step: int = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step}


class _MicroBatchIndices:
    """Index lists of this rank's micro-batches, from a start position on, across epochs."""

    def __init__(self, sampler: GlobalBatchSampler, rank: int, world: int, micro: int, accum: int, start: Position):
        self.sampler, self.rank, self.world, self.micro, self.accum, self.start = sampler, rank, world, micro, accum, start

    def __iter__(self) -> Iterator[list[int]]:
        epoch, step = self.start.epoch, self.start.step
        per_rank = self.micro * self.accum
        while True:
            while step < self.sampler.steps_per_epoch:
                mine = self.sampler.batch(epoch, step)[self.rank * per_rank : (self.rank + 1) * per_rank]
                for m in range(self.accum):
                    yield mine[m * self.micro : (m + 1) * self.micro]
                step += 1
            epoch, step = epoch + 1, 0


class StepLoader:
    """Iterate ``(position, micro_batches)``; ``position`` is the step those batches belong to."""

    def __init__(self, dataset: Dataset, sampler: GlobalBatchSampler, collate, *, rank: int, world: int,
                 micro_batch_size: int, grad_accum: int, num_workers: int = 0) -> None:
        self.dataset, self.sampler, self.collate = dataset, sampler, collate
        self.rank, self.world, self.micro, self.accum, self.num_workers = rank, world, micro_batch_size, grad_accum, num_workers

    def iterate(self, start: Position) -> Iterator[tuple[Position, list[dict]]]:
        if start.step >= self.sampler.steps_per_epoch:  # e.g. saved with fewer ranks (more steps per epoch)
            start = Position(start.epoch + 1, 0)
        indices = _MicroBatchIndices(self.sampler, self.rank, self.world, self.micro, self.accum, start)
        dl = DataLoader(self.dataset, batch_sampler=indices, collate_fn=self.collate, num_workers=self.num_workers,
                        persistent_workers=False, prefetch_factor=4 if self.num_workers else None)
        pos = Position(start.epoch, start.step)
        group: list[dict] = []
        for mb in dl:
            group.append(mb)
            if len(group) == self.accum:
                yield Position(pos.epoch, pos.step), group
                group = []
                pos.step += 1
                if pos.step == self.sampler.steps_per_epoch:
                    pos.epoch, pos.step = pos.epoch + 1, 0
