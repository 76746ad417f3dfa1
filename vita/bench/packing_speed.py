"""Training tokens/s with packing across the batch vs padded batches, on the same samples.

One pool of synthetic samples whose lengths follow the VITA-like mixture of vita.bench.data scaled
down 20x (max_length 310; the CPU could not train 6,200-token rows in a benchmark's time), random
token ids, a Qwen2-shaped model (hidden 256, 4 layers, vocab 1024, fp32, sdpa). Arms, each
iterating its sampler's micro-batches from the start of epoch 0 and timed on forward + backward
of OmniModel (the part the data layout changes; no optimizer):

- ``padded, modality_length_grouped``: VITA's sampler, micro-batch 4 padded to the longest;
- ``padded, token_budget``: micro-batches of at most ``4 x 310`` padded tokens;
- ``packed, token_budget + packing``: rows of 310 filled across the batch, 4 rows per micro-batch.

Arms alternate in blocks of micro-batches; reported: supervised-input (non-pad) tokens per second
and the ratio to each padded arm. Nothing is asserted.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from vita.bench.data import vita_like_lengths

SHAPE = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=1024)


def _model():
    from transformers import AutoModelForCausalLM, Qwen2Config

    from vita.model.omni import OmniModel

    torch.manual_seed(0)
    cfg = Qwen2Config(**SHAPE, max_position_embeddings=1024, tie_word_embeddings=True)
    return OmniModel(AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa"))


def run(n: int = 600, max_length: int = 310, rows: int = 4, micro_batches: int = 24, block: int = 3,
        seed: int = 0) -> dict:
    """Real tokens/s of each arm over ``micro_batches`` micro-batches (after one warm-up each)."""
    from vita.data.collate import Collator
    from vita.registry import SAMPLERS, load_builtins

    load_builtins()
    lengths, mm = vita_like_lengths(n, seed=seed)
    lengths = np.maximum(lengths // 20, 4)
    rng = np.random.default_rng(seed)
    items = []
    for i, m in enumerate(lengths.tolist()):
        ids = rng.integers(1, 1024, m).tolist()
        items.append({"id": f"s{i}", "input_ids": ids, "labels": [-100] * 2 + ids[2:]})
    budget = rows * max_length
    arms = {"padded, modality_length_grouped": ("modality_length_grouped", {}, False),
            "padded, token_budget": ("token_budget", {"token_budget": budget}, False),
            "packed, token_budget + packing": ("token_budget", {"token_budget": budget, "packing": True,
                                                                "max_length": max_length}, True)}
    batches = {}
    for arm, (name, extra, packing) in arms.items():
        s = SAMPLERS.build(name, num_samples=n, global_batch_size=rows, seed=seed, micro_per_step=1, lengths=lengths,
                           modalities=mm, **extra)
        mbs = [mb for st in range(s.steps_per_epoch) for mb in s.micro_batches(0, st)][: micro_batches + 1]
        collate = Collator(0, packing=packing, max_length=max_length)
        batches[arm] = [collate([items[i] for i in mb]) for mb in mbs]
    model = _model()
    times = {arm: [] for arm in arms}
    tokens = {arm: [] for arm in arms}

    def step(mb) -> None:
        out = model(**{k: v for k, v in mb.items() if isinstance(v, torch.Tensor)}, host_batch=mb)
        (out["ce_sum"] / 1000.0).backward()
        model.zero_grad(set_to_none=True)

    names = list(arms)
    for arm in names:
        step(batches[arm][0])  # warm-up
    for k, s in enumerate(range(1, micro_batches + 1, block)):
        for arm in names[k % len(names):] + names[: k % len(names)]:
            for mb in batches[arm][s:s + block]:
                t0 = time.perf_counter()
                step(mb)
                times[arm].append(time.perf_counter() - t0)
                tokens[arm].append(int(mb["attention_mask"].sum()))
    out = {}
    for arm in names:
        used = batches[arm][1:len(times[arm]) + 1]
        real, area = sum(tokens[arm]), sum(int(mb["input_ids"].numel()) for mb in used)
        out[arm] = {"tokens_per_s": real / sum(times[arm]), "non_pad_share": real / area,
                    "micro_batches": len(times[arm]), "real_tokens": real, "seconds": sum(times[arm])}
    packed = out["packed, token_budget + packing"]["tokens_per_s"]
    for arm in names:
        out[arm]["packed_over_this"] = packed / out[arm]["tokens_per_s"]
    return {"arms": out, "setup": {"samples": n, "max_length": max_length, "rows_per_micro_batch": rows,
                                   "micro_batches": micro_batches, "block": block, "shape": SHAPE,
                                   "threads": torch.get_num_threads()}}


def table(r: dict) -> list[str]:
    """Markdown rows of a :func:`run` result."""
    rows = ["| arm | non-pad tokens/s | non-pad share | packed ÷ this | micro-batches | real tokens |",
            "|---|---:|---:|---:|---:|---:|"]
    for arm, a in r["arms"].items():
        rows.append(f"| {arm} | {a['tokens_per_s']:.0f} | {a['non_pad_share']:.3f} | {a['packed_over_this']:.2f} | "
                    f"{a['micro_batches']} | {a['real_tokens']} |")
    return rows


if __name__ == "__main__":
    print("\n".join(table(run())))
