"""Subprocess job of the sampler resume test: ``python -m tests.sampler_resume_job SAMPLERS MODE STEPS STATE``.

For each comma-separated sampler, MODE ``full`` prints the ids of STEPS steps; ``first`` prints
STEPS steps and saves the loader state to STATE.<sampler>; ``rest`` loads that state in this fresh
process and prints the next STEPS steps. Data loads in 2 worker processes.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from vita.data import TokenizedDataset
from vita.data.collate import Collator
from vita.data.loader import Position, StepLoader
from vita.registry import SAMPLERS, load_builtins


def make_loader(name: str) -> StepLoader:
    load_builtins()
    n, rank, world, micro, accum = 97, 1, 2, 2, 2
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, n)
    modalities = rng.random(n) < 0.4
    items = [{"id": f"s{i}", "input_ids": [i + 1] * int(lengths[i]), "labels": [i + 1] * int(lengths[i])}
             for i in range(n)]
    packing = name.endswith("+packing")  # across the batch: rows of 60 tokens, 2 per micro-batch
    sampler = SAMPLERS.build(name.removesuffix("+packing"), num_samples=n, global_batch_size=micro * accum * world,
                             seed=11, micro_per_step=accum * world, lengths=lengths, modalities=modalities,
                             token_budget=120, packing=packing, max_length=60, pack_window=32)
    return StepLoader(TokenizedDataset(items), sampler, Collator(0, packing, 60), rank=rank, world=world,
                      micro_batch_size=micro, grad_accum=accum, num_workers=2)


def run(name: str, mode: str, steps: int, state_path: str) -> list:
    loader = make_loader(name)
    start = Position()
    if mode == "rest":
        with open(state_path) as f:
            start = loader.load_state_dict(json.load(f))
    out = []
    for k, (pos, mbs) in enumerate(loader.iterate(start)):
        if k == steps:
            break
        out.append([[pos.epoch, pos.step], [mb["ids"] for mb in mbs]])
    if mode == "first":
        with open(state_path, "w") as f:
            json.dump(loader.state_dict(), f)
    return out


def main() -> None:
    names, mode, steps, state = sys.argv[1].split(","), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    print(json.dumps({n: run(n, mode, steps, f"{state}.{n}") for n in names}))


if __name__ == "__main__":
    main()
