"""The DeepSpeed config, generated from ``cfg.engine`` and ``cfg.optim`` (nothing hand-written)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_ds_config(engine: DictConfig, optim: DictConfig, world_size: int) -> dict:
    """DeepSpeed JSON config for one run.

    The optimizer is AdamW built by DeepSpeed from our parameter groups (each group keeps its
    own lr and weight decay). On CPU it is torch's AdamW (``torch_adam``), which needs no JIT
    build; on GPU DeepSpeed's fused kernel. The LR schedule is ours (``vita.engine.optim``).
    """
    impl = engine.optimizer_impl
    if impl == "auto":
        impl = "fused" if torch.cuda.is_available() else "torch"
    zero: dict = {"stage": int(engine.zero_stage)}
    if engine.zero_stage == 3:
        zero["stage3_param_persistence_threshold"] = int(engine.stage3_param_persistence_threshold)
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    if engine.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if engine.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    cfg: dict = {
        "train_micro_batch_size_per_gpu": int(engine.micro_batch_size),
        "gradient_accumulation_steps": int(engine.grad_accum),
        "train_batch_size": int(engine.micro_batch_size * engine.grad_accum * world_size),
        "gradient_clipping": float(engine.grad_clip),
        "zero_optimization": zero,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": float(optim.lr),
                "betas": [float(b) for b in optim.betas],
                "eps": float(optim.eps),
                "weight_decay": float(optim.weight_decay),
                "torch_adam": impl == "torch",
            },
        },
        "bf16": {"enabled": engine.precision == "bf16"},
        "fp16": {"enabled": engine.precision == "fp16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if engine.offload_optimizer and impl == "torch":
        cfg["zero_force_ds_cpu_optimizer"] = False
    extra = OmegaConf.to_container(engine.extra, resolve=True) if isinstance(engine.extra, DictConfig) else dict(engine.extra)
    return _merge(cfg, extra or {})
