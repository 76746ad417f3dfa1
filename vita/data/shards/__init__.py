"""Sharded, streamed datasets (``data.format: shards``): WebDataset-style tar shards + a manifest.

``python -m vita.data.shard`` writes them (:mod:`vita.data.shards.writer`); :func:`build_shard_data`
reads them as per-(rank, worker) streams with a shuffle buffer and exact resume
(:mod:`~vita.data.shards.plan`, :mod:`~vita.data.shards.stream`, :mod:`~vita.data.shards.loader`).
"""

from __future__ import annotations

import logging

from vita.errors import ConfigError
from vita.registry import DATASETS

log = logging.getLogger(__name__)
SAMPLERS = {"random": None, "sequential": None, "length_grouped": "length", "modality_length_grouped": "modality",
            "token_budget": "budget"}
"""``data.sampler`` on shards -> how the shuffle buffer groups micro-batches (vita.data.shards.stream.grouped;
``budget``: vita.data.shards.stream.budget_groups)."""


@DATASETS.register("shards")
def shards_format(data_cfg):
    """``format: shards`` is read as a stream by :func:`build_shard_data`, never as a random-access source."""
    raise ConfigError("data.format=shards is read as a stream (vita.data.shards.build_shard_data), not by record; "
                      "give the JSON mixture's data config to this command")


def build_shard_data(cfg, tokenizer, rank: int, world: int, spec=None):
    """The :class:`~vita.data.DataBundle` of ``format: shards``: the engine cannot tell it from the JSON path's."""
    from vita.data import DataBundle, make_processor
    from vita.data.collate import Collator
    from vita.data.shards.loader import ShardLoader
    from vita.data.shards.plan import ShardPlan, check_fresh, open_set

    d = cfg.data
    if d.sampler not in SAMPLERS:
        raise ConfigError(f"data.sampler={d.sampler} is not available with data.format=shards (the stream's order is "
                          "the seeded shard order and shuffle buffer); use one of " + ", ".join(SAMPLERS) + " (random: "
                          "the buffer's order; sequential: as written; the grouped ones group the micro-batches of "
                          "each buffer; token_budget: each buffer cut into micro-batches of data.token_budget tokens)")
    if not d.shards:
        raise ConfigError("data.format=shards needs data.shards: a list of {name, url, ratio} "
                          "(url: a shard folder, its manifest.json or DIR/shard-{000000..000009}.tar)")
    proc = make_processor(d, tokenizer, spec)
    sets = [open_set(s.name, s.url, s.ratio, d.shard_timeout) for s in d.shards]
    check_fresh(sets, d, proc)
    plan = ShardPlan(sets, seed=cfg.train.seed, world=world, workers=d.num_workers,
                     micro_batch_size=cfg.engine.micro_batch_size, grad_accum=cfg.engine.grad_accum,
                     shuffle_buffer=d.shuffle_buffer, shuffle=d.sampler != "sequential", grouping=SAMPLERS[d.sampler],
                     token_budget=d.token_budget, packing=d.packing, max_length=d.max_length, pack_window=d.pack_window)
    if rank == 0 and plan.token_budget:
        log.info("data '%s': %d shard set(s), %d shards; %d steps per epoch of micro-batches of at most %d tokens "
                 "(%d per stream: the tokens any stream is dealt, %d, // %d), so at least %d tokens of epoch 0 are "
                 "left unread so that every rank and data worker ends it at the same step (each rank logs what "
                 "it left at the end of each epoch)", d.name, len(sets),
                 sum(len(st.shards) for st in sets), plan.steps_per_epoch, plan.token_budget, plan.micro_per_stream,
                 plan.stream_tokens, plan.capacity, plan.tokens_dropped)
    elif rank == 0:
        bad = sum(int(st.manifest.get("bad_samples", 0)) for st in sets)
        log.info("data '%s': %d shard set(s), %d shards; %d samples per epoch (%d steps), %d left unread per epoch so "
                 "that every rank and data worker ends it at the same step; %d bad sample(s) were left out at "
                 "sharding (bad_samples.jsonl beside each manifest)", d.name, len(sets),
                 sum(len(st.shards) for st in sets), plan.samples_per_epoch, plan.steps_per_epoch, plan.dropped, bad)
    loader = ShardLoader(plan, proc, Collator(tokenizer.pad_token_id, d.packing, d.max_length), rank=rank,
                         num_workers=d.num_workers, on_bad_sample=d.on_bad_sample, timeout=d.shard_timeout)
    return DataBundle(plan, plan, loader)
