"""Shared pieces of the step-time benchmarks: config, model and batches, the plain torch step, and
the interleaved timing loop (arms alternate in blocks, the first arm rotating, so machine noise hits
all alike). Used by :mod:`vita.bench.step_time` and :mod:`vita.bench.engine`."""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections.abc import Callable

import torch

Step = Callable[[list[dict]], float]  # one optimizer step on these micro-batches -> its loss


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def compose(overrides: list[str]):
    """The validated Hydra config of ``vita.run`` with these overrides (no logging, no checkpoints)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from vita.config import CONF_DIR, register_configs, register_resolvers, validate

    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("config", overrides=["train.ckpt_every=0", "logging.loggers=[]",
                                                 "logging.progress_bar=false", "logging.plot=false", *overrides])
    validate(cfg)
    return cfg


def init_single_process(cfg):
    """World size 1 process group (DeepSpeed needs one); returns the DistInfo."""
    from vita.engine.distributed import init_distributed

    if not torch.distributed.is_initialized():
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(free_port()))
    return init_distributed(cfg.engine.timeout_min)


def build(cfg):
    """Tokenizer and the model of ``cfg`` as training builds them (seeded: every call gives the same initial weights)."""
    from vita.model.builder import build_for

    torch.manual_seed(cfg.train.seed)
    built = build_for(cfg.model)
    return built.tokenizer, built.model


def preload(cfg, tokenizer, dist_info, n: int):
    """The data bundle and its first ``n`` steps' micro-batches, loaded up front (loading is not timed)."""
    from vita.data import Position, build_data

    data = build_data(cfg, tokenizer, dist_info.rank, dist_info.world_size)
    it = data.loader.iterate(Position())
    return data, [next(it)[1] for _ in range(n)]


def make_optimizer(model: torch.nn.Module, cfg, group_lrs: dict[str, float], total_steps: int):
    """``torch.optim.AdamW`` over the engine's param groups and the engine's ``LambdaLR`` schedule."""
    from vita.engine.optim import make_scheduler_factory, param_groups, warmup_steps

    o = cfg.optim
    opt = torch.optim.AdamW(param_groups(model.module_groups(), group_lrs, o.weight_decay), lr=o.lr,
                            betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    return opt, make_scheduler_factory(o.scheduler, total_steps, warmup_steps(o, total_steps), o.min_lr_ratio)(opt)


def plain_step_fn(model: torch.nn.Module, cfg, group_lrs: dict[str, float], total_steps: int) -> Step:
    """The plain torch loop's step, with the optimizer and schedule the engine would build: forward,
    ``ce_sum / num_tokens``, backward, ``clip_grad_norm_``, ``torch.optim.AdamW``, ``LambdaLR``, ``zero_grad``."""
    opt, sched = make_optimizer(model, cfg, group_lrs, total_steps)
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


def interleave(steps: dict[str, Step], batches: list, warmup: int, block: int):
    """Run every arm over ``batches``: ``warmup`` untimed steps each, then timed blocks of ``block``
    steps, arms in rotating order. Returns (seconds per step, last loss) per arm."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    last: dict[str, float] = {}
    names = list(steps)
    for name in names:
        for b in batches[:warmup]:
            last[name] = steps[name](b)
    for k, start in enumerate(range(warmup, len(batches), block)):
        for name in names[k % len(names):] + names[: k % len(names)]:
            for b in batches[start : start + block]:
                last[name] = run_timed(steps[name], b, times[name])
    return times, last


def summary(times: list[float]) -> dict[str, float]:
    return {"median_ms": 1e3 * statistics.median(times), "mean_ms": 1e3 * statistics.fmean(times)}
