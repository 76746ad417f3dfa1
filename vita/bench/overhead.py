"""Engine overhead: ms per optimizer step of vita (ZeRO-0 and ZeRO-2, world 1) against a plain torch
loop and the Hugging Face Trainer, on one ~30 M-parameter Qwen2-shaped model and the same batches.

All four arms start from the same weights (one seeded build, deep-copied), train fp32 on the same
pre-loaded micro-batches (the demo data), with torch AdamW, gradient clipping at 1.0 and the same
warmup + cosine schedule; they alternate in blocks (vita.bench.harness.interleave), so their last
losses agree when they do the same work. Ratios are of medians over all timed steps; their spread is
the 25th-75th percentile of the per-block ratios (arm median / plain median in the same block,
which ran next to each other in time). The HF Trainer runs without DeepSpeed (see
vita.bench.hf_arm: DeepSpeed's CPU path is only what vita uses here; the Trainer's DeepSpeed
integration is not run on CPU). Ratios are of medians, measured in one run.
"""

from __future__ import annotations

import copy
import logging
import statistics
import tempfile
from pathlib import Path

import torch

from vita.bench.harness import build, compose, init_single_process, interleave, plain_step_fn, preload, summary

SHAPE = "{hidden_size:512,intermediate_size:2048,num_hidden_layers:8,num_attention_heads:8,num_key_value_heads:2}"
ARMS = ("vita ZeRO-0", "vita ZeRO-2", "plain torch", "HF Trainer")


def block_ratios(times: list[float], plain: list[float], block: int) -> list[float]:
    """Per interleaved block: the arm's median step time over plain torch's in the same block (adjacent in time)."""
    out = []
    for s in range(0, min(len(times), len(plain)), block):
        a, b = times[s:s + block], plain[s:s + block]
        out.append(statistics.median(a) / statistics.median(b))
    return out


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo = int(k)
    return xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * (k - lo)


def run(steps: int = 200, warmup: int = 5, block: int = 5, micro_batch: int = 4) -> dict:
    """Measure every arm; returns per-arm summaries, ratios to plain torch and the setup."""
    from vita.bench.hf_arm import HFTrainerArm
    from vita.engine.engine import Trainer
    from vita.engine.flops import StepFlops
    from vita.stage import apply_stage

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    total = warmup + steps
    # the loss as the other arms compute it (plain logits): this measures the loop, not engine.fused_loss
    common = ["experiment=chatterbot_tiny", "model=tiny_qwen2", f"++model.overrides={SHAPE}", "engine.precision=fp32", "engine.grad_accum=1",
              "engine.fused_loss=off",
              f"engine.micro_batch_size={micro_batch}", f"train.max_steps={total}"]
    cfgs = {0: compose([*common, "engine=zero0"]), 2: compose([*common, "engine=zero2"])}
    cfg = cfgs[0]
    dist_info = init_single_process(cfg)
    tokenizer, base = build(cfg)
    models = {arm: copy.deepcopy(base) for arm in ARMS}
    group_lrs = {arm: apply_stage(m, cfg.stage, cfg.optim.lr) for arm, m in models.items()}
    data, batches = preload(cfg, tokenizer, dist_info, total)
    n_params = sum(p.numel() for p in base.parameters())
    flops = StepFlops(base)
    step_flops = [sum(flops.micro_batch(mb) for mb in b) for b in batches[warmup:]]
    tokens = [sum(int(mb["attention_mask"].sum()) for mb in b) for b in batches[warmup:]]

    trainers, hf = [], None
    with tempfile.TemporaryDirectory(prefix="vita-bench-") as tmp:
        try:
            steps_fn = {}
            for stage, arm in ((0, "vita ZeRO-0"), (2, "vita ZeRO-2")):
                t = Trainer(cfgs[stage], models[arm], data, tokenizer, dist_info, Path(tmp) / arm, group_lrs[arm])
                trainers.append(t)
                steps_fn[arm] = lambda mbs, t=t: t.train_step(mbs)["loss"]
            steps_fn["plain torch"] = plain_step_fn(models["plain torch"], cfg, group_lrs["plain torch"], total)
            hf = HFTrainerArm(models["HF Trainer"], cfg, group_lrs["HF Trainer"], batches)
            steps_fn["HF Trainer"] = hf.step
            times, last = interleave(steps_fn, batches, warmup, block)
        finally:
            for t in trainers:
                t.close()
            if hf is not None:
                hf.close()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()

    mean_flops, mean_tokens = sum(step_flops) / len(step_flops), sum(tokens) / len(tokens)
    arms = {}
    for arm in ARMS:
        s = summary(times[arm])
        sec = s["median_ms"] / 1e3
        arms[arm] = {**s, "steps": len(times[arm]), "last_loss": last[arm], "tokens_per_s": mean_tokens / sec,
                     "gflops": mean_flops / sec / 1e9}
    plain = arms["plain torch"]["median_ms"]
    for arm in ARMS:
        arms[arm]["ratio_to_plain"] = arms[arm]["median_ms"] / plain
        r = block_ratios(times[arm], times["plain torch"], block)
        arms[arm].update(ratio_p25=_quantile(r, 0.25), ratio_p75=_quantile(r, 0.75), ratio_blocks=len(r),
                         p25_ms=1e3 * _quantile(times[arm], 0.25), p75_ms=1e3 * _quantile(times[arm], 0.75))
    return {"arms": arms, "setup": {"params": n_params, "shape": SHAPE, "micro_batch": micro_batch, "steps": steps,
                                    "warmup": warmup, "block": block, "tokens_per_step": mean_tokens,
                                    "flops_per_step": mean_flops, "threads": torch.get_num_threads()}}


def table(result: dict) -> list[str]:
    """Markdown rows of a :func:`run` result."""
    rows = ["| arm | median ms/step (IQR) | mean ms/step | × plain torch | block ratios p25–p75 | tokens/s | "
            "model GFLOP/s | steps | last loss |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for arm, r in result["arms"].items():
        iqr = f" ({r['p25_ms']:.0f}–{r['p75_ms']:.0f})" if "p25_ms" in r else ""
        spread = f"{r['ratio_p25']:.3f}–{r['ratio_p75']:.3f}" if "ratio_p25" in r else "–"
        rows.append(f"| {arm} | {r['median_ms']:.1f}{iqr} | {r['mean_ms']:.1f} | {r['ratio_to_plain']:.3f} | {spread} | "
                    f"{r['tokens_per_s']:.0f} | {r['gflops']:.1f} | {r['steps']} | {r['last_loss']:.4f} |")
    return rows
