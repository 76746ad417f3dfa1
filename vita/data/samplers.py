"""Samplers: which sample indices make up each global batch.

A sampler is a pure function of ``(epoch, step)``: resuming at a step needs only those two
numbers, so the data order after a restart is exactly the order of an uninterrupted run.
The loader slices each global batch into rank and micro-batch parts.
"""

from __future__ import annotations

import numpy as np

from vita.registry import SAMPLERS


class GlobalBatchSampler:
    """Base: ``steps_per_epoch`` and ``batch(epoch, step)`` -> ``global_batch_size`` indices."""

    def __init__(self, num_samples: int, global_batch_size: int, seed: int = 0, **_) -> None:
        if num_samples < global_batch_size:
            from vita.errors import ConfigError

            raise ConfigError(
                f"{num_samples} samples cannot fill one global batch of {global_batch_size} "
                "(engine.micro_batch_size x engine.grad_accum x world size); lower the batch or add data"
            )
        self.num_samples = num_samples
        self.global_batch_size = global_batch_size
        self.seed = seed

    @property
    def steps_per_epoch(self) -> int:
        """Full global batches per epoch (the remainder is dropped, differently each epoch)."""
        return self.num_samples // self.global_batch_size

    def order(self, epoch: int) -> np.ndarray:
        raise NotImplementedError

    def batch(self, epoch: int, step: int) -> list[int]:
        g = self.global_batch_size
        return self.order(epoch)[step * g : (step + 1) * g].tolist()


class SequentialSampler(GlobalBatchSampler):
    def order(self, epoch: int) -> np.ndarray:
        return np.arange(self.num_samples)


class RandomSampler(GlobalBatchSampler):
    """A fresh permutation each epoch, seeded by ``(seed, epoch)``."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self._cache: tuple[int, np.ndarray] | None = None

    def order(self, epoch: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._cache = (epoch, rng.permutation(self.num_samples))
        return self._cache[1]


@SAMPLERS.register("random")
def random_sampler(**kw) -> RandomSampler:
    return RandomSampler(**kw)


@SAMPLERS.register("sequential")
def sequential_sampler(**kw) -> SequentialSampler:
    return SequentialSampler(**kw)
