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
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

Step = Callable[[list[dict]], float]  # one optimizer step on these micro-batches -> its loss


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def plain_step_fn(model: torch.nn.Module, cfg, group_lrs: dict[str, float], total_steps: int) -> Step:
    """The plain torch loop's step, with the optimizer and schedule the engine would build."""
    from vita.engine.optim import make_scheduler_factory, param_groups, warmup_steps

    o = cfg.optim
    opt = torch.optim.AdamW(param_groups(model.module_groups(), group_lrs, o.weight_decay), lr=o.lr,
                            betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    sched = make_scheduler_factory(o.scheduler, total_steps, warmup_steps(o, total_steps), o.min_lr_ratio)(opt)
    params = [p for p in model.parameters() if p.requires_grad]
    device = next(model.parameters()).device

    def step(micro_batches: list[dict]) -> float:
        (mb,) = micro_batches  # engine.grad_accum=1: one micro-batch per step
        out = model(**{k: v.to(device) for k, v in mb.items() if isinstance(v, torch.Tensor)})
        loss = out["ce_sum"] / out["num_tokens"]
        loss.backward()
        if cfg.engine.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.engine.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def run_timed(step: Step, batch: list[dict], times: list[float]) -> float:
    _sync()
    t0 = time.perf_counter()
    loss = step(batch)
    _sync()
    times.append(time.perf_counter() - t0)
    return loss


def summary(times: list[float]) -> dict[str, float]:
    return {"median_ms": 1e3 * statistics.median(times), "mean_ms": 1e3 * statistics.fmean(times)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200, help="timed steps per loop (after warmup)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps per loop first")
    ap.add_argument("--micro-batch", type=int, default=8, help="samples per step")
    ap.add_argument("--block", type=int, default=10, help="steps per alternating block")
    ap.add_argument("--out", type=Path, default=None, help="write the results here as JSON")
    args = ap.parse_args(argv)

    from hydra import compose, initialize_config_dir
    from transformers import AutoTokenizer

    from vita.config import CONF_DIR, register_configs, register_resolvers, validate
    from vita.data import Position, build_data
    from vita.engine.distributed import init_distributed
    from vita.engine.engine import Trainer
    from vita.model import build_model
    from vita.stage import apply_stage

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    total = args.warmup + args.steps
    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[
            "model=tiny_qwen2", "engine=zero0", "engine.precision=fp32", "engine.grad_accum=1",
            f"engine.micro_batch_size={args.micro_batch}", f"train.max_steps={total}", "train.ckpt_every=0",
            "logging.loggers=[]", "logging.progress_bar=false", "logging.plot=false"])
    validate(cfg)
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    dist_info = init_distributed(cfg.engine.timeout_min)

    torch.manual_seed(cfg.train.seed)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.tokenizer)
    model = build_model(cfg.model, vocab_size=len(tokenizer))
    plain_model = copy.deepcopy(model)  # same initial weights for both loops
    group_lrs = apply_stage(model, cfg.stage, cfg.optim.lr)
    apply_stage(plain_model, cfg.stage, cfg.optim.lr)
    data = build_data(cfg, tokenizer, dist_info.rank, dist_info.world_size)
    it = data.loader.iterate(Position())
    batches = [next(it)[1] for _ in range(total)]  # pre-loaded: data loading is not timed

    times: dict[str, list[float]] = {"vita": [], "plain": []}
    last_loss: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="vita-bench-") as tmp:
        trainer = Trainer(cfg, model, data, tokenizer, dist_info, Path(tmp), group_lrs)
        try:
            device = str(trainer.engine.device)
            plain_model.to(device)
            steps: dict[str, Step] = {"vita": lambda mbs: trainer.train_step(mbs)["loss"],
                                      "plain": plain_step_fn(plain_model, cfg, group_lrs, total)}
            for step in steps.values():
                for b in batches[: args.warmup]:
                    step(b)
            for k, start in enumerate(range(args.warmup, total, args.block)):
                order = ("vita", "plain") if k % 2 == 0 else ("plain", "vita")
                for name in order:
                    for b in batches[start : min(start + args.block, total)]:
                        last_loss[name] = run_timed(steps[name], b, times[name])
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
