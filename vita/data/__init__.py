"""Data pipeline: sources -> samples -> tokens -> sampler -> per-rank micro-batches."""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field

from torch.utils.data import Dataset

from vita.data import shards as _shards  # noqa: F401  (registers format: shards)
from vita.data import sources as _sources  # noqa: F401  (registers the dataset formats)
from vita.data import templates as _templates  # noqa: F401  (registers the templates)
from vita.data.collate import Collator
from vita.data.dataset import Index, MediaDataset, Processor, index, media_options
from vita.data.loader import Position, StepLoader
from vita.data.samplers import GlobalBatchSampler, sampler_options
from vita.data.sources import ListSource, Source
from vita.data.spec import DataSpec, preset
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
    dataset: Dataset
    sampler: GlobalBatchSampler
    loader: StepLoader
    skipped: Counter = field(default_factory=Counter)
    """Bad samples dropped while indexing, per reason (loading-time ones are in ``loader.skipped``)."""
    truncated: int = 0
    """Over-long samples kept truncated (``data.overlong=truncate``)."""
    lost_supervised: int = 0
    """Supervised tokens those cuts remove (each sample once)."""

    def skip_counts(self) -> dict[str, int]:
        """``skipped/<reason>`` -> count, indexing and loading together, and the ``overlong/*`` truncation
        counts (for the metrics)."""
        total = self.skipped + self.loader.skipped
        out = {"skipped/" + re.sub(r"[^A-Za-z0-9]+", "_", k): v for k, v in sorted(total.items())}
        if self.truncated:
            out.update({"overlong/truncated": self.truncated, "overlong/lost_supervised_tokens": self.lost_supervised})
        return out


def tokenize_all(data_cfg, tokenizer) -> tuple[list[dict], Counter]:
    """Read and tokenise every text-only sample, applying ``data.on_bad_sample`` to the bad ones."""
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


def resolve_spec(data_cfg, tokenizer, spec: DataSpec | None) -> DataSpec | None:
    """The model's spec, else ``data.media_spec``'s preset, with placeholder ids from the tokenizer."""
    if spec is None and data_cfg.media_spec:
        spec = preset(data_cfg.media_spec)
    return spec.with_token_ids(tokenizer) if spec is not None else None


def open_source(data_cfg) -> Source:
    """The configured dataset as a :class:`Source`."""
    raw = DATASETS.build(data_cfg.format, data_cfg=data_cfg)
    if isinstance(raw, list):
        raw = ListSource(raw[: data_cfg.limit] if data_cfg.limit else raw, data_cfg.name)
    return raw


PROMPT_KEYS = ("template", "system_prompt", "max_length", "min_tiles", "max_tiles", "use_thumbnail",
               "image_aspect_ratio", "min_frames", "max_frames", "video_fps", "dither", "state_tokens", "vita_layout",
               "media_spec")


def prompt_settings(data_cfg) -> dict:
    """The ``cfg.data`` keys that shape prompts (template, tiling, frames, state tokens ...), for an export."""
    return {k: data_cfg.get(k) for k in PROMPT_KEYS}


def make_processor(data_cfg, tokenizer, spec: DataSpec | None) -> Processor:
    template = TEMPLATES.build(data_cfg.template, system=data_cfg.system_prompt)
    return Processor(template, tokenizer, spec, media_options(data_cfg), data_cfg.max_length, data_cfg.state_tokens,
                     data_cfg.vita_layout, overlong=data_cfg.overlong, max_images=data_cfg.max_images)


def build_data(cfg, tokenizer, rank: int, world: int, spec: DataSpec | None = None) -> DataBundle:
    """Everything the engine needs to draw batches for this rank.

    Args:
        spec: the model's :class:`DataSpec` (``model.data_spec()``); ``None`` = ``data.media_spec`` or text-only.
    """
    d = cfg.data
    spec = resolve_spec(d, tokenizer, spec)
    if d.format == "shards":  # streamed tar shards (vita/data/shards/)
        from vita.data.shards import build_shard_data

        return build_shard_data(cfg, tokenizer, rank, world, spec)
    source = open_source(d)
    proc = make_processor(d, tokenizer, spec)
    idx: Index = index(source, proc, d.on_bad_sample, progress=rank == 0 and len(source) > 5000, use_cache=d.index_cache)
    if rank == 0:
        report_overlong(idx, d)
    if len(idx.refs) == 0:
        raise DataError(f"data '{d.name}': no usable sample")
    dataset = MediaDataset(source, idx, proc)
    micro_per_step = cfg.engine.grad_accum * world
    global_batch = cfg.engine.micro_batch_size * micro_per_step
    sampler = SAMPLERS.build(d.sampler, num_samples=len(dataset), global_batch_size=global_batch, seed=cfg.train.seed,
                             micro_per_step=micro_per_step, lengths=idx.lengths, modalities=idx.multimodal,
                             **sampler_options(d))
    loader = StepLoader(dataset, sampler, Collator(tokenizer.pad_token_id, d.packing, d.max_length), rank=rank,
                        world=world, micro_batch_size=cfg.engine.micro_batch_size, grad_accum=cfg.engine.grad_accum,
                        num_workers=d.num_workers, on_bad_sample=d.on_bad_sample)
    return DataBundle(dataset, sampler, loader, idx.skipped, len(idx.truncated), idx.lost_supervised)


def report_overlong(idx: Index, data_cfg, first: int = 3) -> str | None:
    """One warning: how many samples exceed ``data.max_length``, what was done and the first few; returns it."""
    dropped = [p for p in idx.problems if p.kind == "over-long sample" and data_cfg.overlong == "skip"]
    if not idx.truncated and not dropped:
        return None
    if idx.truncated:
        n, what = len(idx.truncated), (f"truncated (data.overlong=truncate), losing {idx.lost_supervised} supervised "
                                       "tokens")
        names = [str(t) for t in idx.truncated[:first]]
    else:
        n, what = len(dropped), "skipped (data.overlong=skip)"
        names = [f"{p.where} sample '{p.sample_id}'" for p in dropped[:first]]
    more = f", and {n - first} more" if n > first else ""
    msg = (f"data '{data_cfg.name}': {n} sample(s) exceed data.max_length={data_cfg.max_length} and are {what}: "
           f"{'; '.join(names)}{more}. python -m vita.check lists them all")
    log.warning("%s", msg)
    return msg


__all__ = ["DataBundle", "DataSpec", "Position", "build_data", "prompt_settings", "tokenize_all"]
