"""Step time of the vita engine against a plain torch loop, in one process.

What is measured: wall-clock ms per optimizer step of
  (a) ``vita.engine.engine.Trainer.train_step`` on a DeepSpeed ZeRO-0 fp32 engine, world size 1, and
  (b) a plain torch loop: forward, ``loss = ce_sum / num_tokens``, backward,
      ``torch.nn.utils.clip_grad_norm_``, ``torch.optim.AdamW`` step (same param groups),
      ``LambdaLR`` step (same ``make_scheduler_factory`` schedule), ``zero_grad``.
Both train the same tiny model (``tiny-qwen2``, same initial weights) with the same tokenizer on the
same batches from ``build_data``, pre-loaded so that data loading is not timed. After ``--warmup``
untimed steps each, the two loops alternate in blocks of ``--block`` steps (the one that goes first
alternates too), so machine noise hits both alike. Reported: median and mean ms/step of each, the
ratio vita/plain of the medians, the step count, and each loop's last loss (same work => same loss).

Run:  python -m vita.bench.step_time [--steps 200] [--warmup 10] [--micro-batch 8] [--out FILE.json]
(``make bench`` runs the defaults; set ``OMP_NUM_THREADS`` for stable CPU figures). It never asserts on time.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import tempfile
from pathlib import Path

import torch

from vita.bench.harness import build, compose, init_single_process, interleave, plain_step_fn, preload, summary


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200, help="timed steps per loop (after warmup)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps per loop first")
    ap.add_argument("--micro-batch", type=int, default=8, help="samples per step")
    ap.add_argument("--block", type=int, default=10, help="steps per alternating block")
    ap.add_argument("--out", type=Path, default=None, help="write the results here as JSON")
    args = ap.parse_args(argv)

    from vita.engine.engine import Trainer
    from vita.stage import apply_stage

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    total = args.warmup + args.steps
    cfg = compose(["experiment=chatterbot_tiny", "model=tiny_qwen2", "engine=zero0", "engine.precision=fp32", "engine.grad_accum=1",
                   f"engine.micro_batch_size={args.micro_batch}", f"train.max_steps={total}"])
    dist_info = init_single_process(cfg)
    tokenizer, model = build(cfg)
    plain_model = copy.deepcopy(model)  # same initial weights for both loops
    group_lrs = apply_stage(model, cfg.stage, cfg.optim.lr)
    apply_stage(plain_model, cfg.stage, cfg.optim.lr)
    data, batches = preload(cfg, tokenizer, dist_info, total)

    with tempfile.TemporaryDirectory(prefix="vita-bench-") as tmp:
        trainer = Trainer(cfg, model, data, tokenizer, dist_info, Path(tmp), group_lrs)
        try:
            device = str(trainer.engine.device)
            plain_model.to(device)
            steps = {"vita": lambda mbs: trainer.train_step(mbs)["loss"],
                     "plain": plain_step_fn(plain_model, cfg, group_lrs, total)}
            times, last_loss = interleave(steps, batches, args.warmup, args.block)
        finally:
            trainer.close()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()

    result = {name: {**summary(t), "steps": len(t), "last_loss": last_loss[name]} for name, t in times.items()}
    result["ratio_vita_over_plain_median"] = result["vita"]["median_ms"] / result["plain"]["median_ms"]
    result["setup"] = {"model": cfg.model.backbone, "micro_batch": args.micro_batch, "warmup": args.warmup,
                       "block": args.block, "device": device, "torch": torch.__version__,
                       "threads": torch.get_num_threads()}
    print(f"\n{'loop':<6} {'median ms':>10} {'mean ms':>10} {'steps':>6} {'last loss':>10}")
    for name in ("vita", "plain"):
        r = result[name]
        print(f"{name:<6} {r['median_ms']:>10.2f} {r['mean_ms']:>10.2f} {r['steps']:>6} {r['last_loss']:>10.4f}")
    print(f"ratio vita/plain (median): {result['ratio_vita_over_plain_median']:.3f}")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
