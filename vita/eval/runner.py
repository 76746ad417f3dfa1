"""Run one eval set: loss on the supervised tokens and generated answers, split across ranks.

Rank ``r`` of ``w`` takes records ``r, r + w, ...``; losses are summed and predictions gathered
over ranks, so the figures do not depend on the world size. With ``lockstep`` (distributed,
ZeRO-3) every rank runs the same number of forwards and generation steps: a rank whose shard is
used up steps on a dummy batch (one padding token, no label) until all are done.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from vita.collectives import all_reduce_max, all_reduce_sum
from vita.data.collate import Collator
from vita.data.schema import BadSample
from vita.errors import DataError
from vita.eval.metrics import compute_rows, speaks
from vita.eval.sets import EvalSet
from vita.infer.generate import GenerationConfig, generate
from vita.infer.prompt import build_prompt, collate_prompts, split_answer


def _gather(obj: list) -> list:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return [x for part in out for x in part]


def _to(batch: dict, model) -> dict:
    p = next(model.parameters())
    return {k: (v.to(p.device, p.dtype) if v.is_floating_point() else v.to(p.device)) for k, v in batch.items()
            if isinstance(v, torch.Tensor)}


def _load(es: EvalSet, i: int, fn):
    raw, where, roots = es.records[i]
    try:
        return fn(raw, where, roots)
    except BadSample as e:
        raise DataError(f"eval set '{es.name}': {e}") from None


@torch.no_grad()
def evaluate_set(ctx, es: EvalSet, rank: int = 0, world: int = 1, lockstep: bool = False,
                 progress: bool = False) -> tuple[dict[str, float], list[dict]]:
    """Score ``es`` with ``ctx`` (a :class:`~vita.infer.load.Loaded` or anything with ``model``,
    ``processor``, ``tokenizer``, ``stop``, ``pad_id``); returns (metrics, predictions) on every rank.

    Metrics: ``loss`` (token-mean cross-entropy on the supervised tokens), ``ppl`` = exp(loss),
    ``samples``, and each generation metric of the set. Predictions: one row per record
    (``set``, ``index``, ``id``, ``prediction``, ``reference``; with speech metrics also ``transcript``,
    ``first_chunk_ms``, ``speech_seconds``, ``rtf``), in record order (empty without generation metrics).
    """
    model, proc = ctx.model, ctx.processor
    mine = list(range(rank, len(es), world))
    bs = es.batch_size
    n_batches = math.ceil(len(mine) / bs)
    total_batches = int(all_reduce_max(n_batches)) if lockstep else n_batches
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_batches * (2 if es.generates else 1), desc=f"eval {es.name}", unit="batch",
                   dynamic_ncols=True, leave=False)
    collate = Collator(ctx.pad_id)
    ce, tokens, speech, frames = 0.0, 0, 0.0, 0
    for b in range(total_batches):
        idx = mine[b * bs:(b + 1) * bs]
        items = [_load(es, i, proc.load) for i in idx]
        batch = _to(collate(items), model)  # no items: one padding token without a label (a dummy step)
        out = model(**batch)
        ce += float(out["ce_sum"])
        tokens += int(out["num_tokens"])
        if "speech_sum" in out:  # a speech decoder: its code loss per frame of the spoken answers (stage 3.2)
            speech, frames = speech + float(out["speech_sum"]), frames + int(out["speech_frames"])
        if bar is not None:
            bar.update(1)
    ce, tokens = all_reduce_sum(ce), all_reduce_sum(tokens)
    loss = ce / max(tokens, 1)
    metrics: dict[str, float] = {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "samples": float(len(es))}
    if getattr(model, "speech_decoder", None) is not None:
        metrics["speech_loss"] = all_reduce_sum(speech) / max(all_reduce_sum(frames), 1)
    rows: list[dict] = []
    if es.generates:
        gen = GenerationConfig(max_new_tokens=es.max_new_tokens)
        dummy = collate_prompts([{"id": None, "input_ids": [ctx.pad_id], "labels": [-100]}], ctx.pad_id)
        for b in range(total_batches):
            idx = mine[b * bs:(b + 1) * bs]
            items = [_load(es, i, lambda raw, where, roots: build_prompt(proc, split_answer(raw)[0], where, roots))
                     for i in idx]
            batch = collate_prompts(items, ctx.pad_id) if items else dummy
            got = generate(model, batch, gen, ctx.stop, ctx.pad_id, lockstep=lockstep, dummy=not items)
            spoken = [{}] * len(idx)
            if speaks(es.metrics):  # spoken on the inference path and transcribed (vita/eval/speech.py)
                from vita.eval.speech import speak_answers

                spoken = speak_answers(model, batch, got, ctx.pad_id, es.asr, dummy=not items) or spoken
            for i, ids, said in zip(idx, got, spoken):
                raw = es.records[i][0]
                rows.append({"set": es.name, "index": i, "id": str(raw.get("id", es.records[i][1])),
                             "prediction": ctx.tokenizer.decode(ids, skip_special_tokens=True).strip(),
                             "reference": split_answer(raw)[1], **said})
            if bar is not None:
                bar.update(1)
        rows = sorted(_gather(rows), key=lambda r: r["index"])
        metrics.update(compute_rows(es.metrics, rows))
    if bar is not None:
        bar.close()
    return metrics, rows
