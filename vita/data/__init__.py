"""Data pipeline: sources -> samples -> tokens -> sampler -> per-rank micro-batches."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from torch.utils.data import Dataset

from vita.data import sources as _sources  # noqa: F401  (registers the dataset formats)
from vita.data.collate import Collator
from vita.data.loader import Position, StepLoader
from vita.data.samplers import GlobalBatchSampler
from vita.data.tokenize import tokenize_segments
from vita.errors import DataError
from vita.registry import DATASETS, SAMPLERS, TEMPLATES

log = logging.getLogger(__name__)


class TokenizedDataset(Dataset):
    """Samples already tokenised (text-only data is small and cheap to hold)."""

    def __init__(self, items: list[dict]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


@dataclass
class DataBundle:
    dataset: TokenizedDataset
    sampler: GlobalBatchSampler
    loader: StepLoader
    skipped: Counter = field(default_factory=Counter)


def tokenize_all(data_cfg, tokenizer) -> tuple[list[dict], Counter]:
    """Read and tokenise every sample, applying ``data.on_bad_sample`` to the bad ones."""
    raw = DATASETS.build(data_cfg.format, data_cfg=data_cfg)
    if data_cfg.limit:
        raw = raw[: data_cfg.limit]
    template = TEMPLATES.build(data_cfg.template, system=data_cfg.system_prompt)
    items, skipped = [], Counter()
    for s in raw:
        try:
            tok = tokenize_segments(template.segments(s["conversations"], s["id"]), tokenizer, data_cfg.max_length, s["id"])
        except DataError as e:
            if data_cfg.on_bad_sample == "fail":
                raise DataError(f"{e} (set data.on_bad_sample=skip to drop such samples)") from None
            skipped[str(e).split(": ", 1)[-1].split(" (")[0]] += 1
            log.warning("skipping %s", e)
            continue
        items.append({"id": s["id"], **tok})
    if not items:
        raise DataError(f"data '{data_cfg.name}': no usable sample")
    return items, skipped


def build_data(cfg, tokenizer, rank: int, world: int) -> DataBundle:
    """Everything the engine needs to draw batches for this rank."""
    items, skipped = tokenize_all(cfg.data, tokenizer)
    dataset = TokenizedDataset(items)
    global_batch = cfg.engine.micro_batch_size * cfg.engine.grad_accum * world
    sampler = SAMPLERS.build(cfg.data.sampler, num_samples=len(dataset), global_batch_size=global_batch, seed=cfg.train.seed)
    loader = StepLoader(dataset, sampler, Collator(tokenizer.pad_token_id), rank=rank, world=world,
                        micro_batch_size=cfg.engine.micro_batch_size, grad_accum=cfg.engine.grad_accum,
                        num_workers=cfg.data.num_workers)
    return DataBundle(dataset, sampler, loader, skipped)


__all__ = ["DataBundle", "Position", "build_data", "tokenize_all"]
