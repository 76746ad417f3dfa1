"""Two ranks, ZeRO-3 on gloo, each step each rank given a different modality mix.

Usage: torchrun --nproc_per_node 2 tests/reliability/dist_modality_mix.py BACKBONE STEPS [lora]
At step s rank r trains on ``mix_of(s, r)`` (text-only, image-only, audio-only, video): the two
ranks never hold the same mix, and within 8 steps every mix has met every other. Every collective has a 120 s
timeout (gloo), and the caller a wall-clock one: a hang ends as a failure.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from tests.dist_mixed_modality import AUD, IMG, VID
from vita.config import ModelConfig
from vita.model import build_model

MIXES = ("text", "image", "audio", "video")


def mix_of(step: int, rank: int) -> str:
    offset = 1 + (step // 4) % 3  # rank 1 runs 1, 2 or 3 mixes ahead of rank 0, 4 steps each
    return MIXES[(step + rank * offset) % 4]


def make_batch(model, mix: str) -> dict:
    g = torch.Generator().manual_seed(MIXES.index(mix))  # one fixed batch per mix
    ids = torch.randint(0, 900, (2, 64), generator=g)
    T, out = model.tokens_per_tile, {}
    if mix == "image":  # 2 tiles in sample 0, 1 in sample 1
        ids[0, 2:2 + 2 * T] = IMG
        ids[1, 3:3 + T] = IMG
        out["pixel_values"] = torch.randn(3, 3, 56, 56, generator=g)
    elif mix == "video":  # 3 frames in sample 0
        ids[0, 2:2 + 3 * T] = VID
        out["pixel_values"] = torch.randn(3, 3, 56, 56, generator=g)
    elif mix == "audio":
        for b, n in enumerate((77, 50)):
            ids[b, 4:4 + model.audio_num_tokens(n)] = AUD
        out["audio_features"] = torch.randn(2, 77, 80, generator=g)
        out["audio_lengths"] = torch.tensor([77, 50])
    labels = ids.clone()
    labels[ids >= IMG] = -100
    return {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids), **out}


def main() -> None:
    backbone, steps, lora = sys.argv[1], int(sys.argv[2]), "lora" in sys.argv[3:]
    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False,
                               timeout=datetime.timedelta(seconds=120))
    rank = dist.get_rank()
    torch.manual_seed(0)
    cfg = OmegaConf.structured(ModelConfig(backbone=backbone))
    cfg.vision.tower, cfg.audio.encoder = "tiny-internvit", "tiny-vita"
    model = build_model(cfg, vocab_size=1024)
    model.set_media_token_ids(IMG, VID, AUD)
    if lora:
        from peft import LoraConfig, get_peft_model

        model.llm = get_peft_model(model.llm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    ds_cfg = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "train_batch_size": 4,
              "gradient_clipping": 1.0, "steps_per_print": 10**9,
              "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
              "optimizer": {"type": "AdamW", "params": {"lr": 2e-3, "torch_adam": True}}}
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
                                      config=ds_cfg)
    losses, mixes = [], []
    for step in range(steps):
        mix = mix_of(step, rank)
        print(f"rank {rank} step {step} {mix}", flush=True)
        out = engine(**make_batch(model, mix))
        loss = out["ce_sum"] / out["num_tokens"] + sum(out["aux"].values())
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
        mixes.append(mix)
    finite = all(math.isfinite(float(p.detach().float().sum())) for p in engine.module.parameters())
    result = {"rank": rank, "losses": losses, "mixes": mixes, "local_params_finite": finite}
    Path(os.environ["VITA_RESULT_DIR"], f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    engine.destroy()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
