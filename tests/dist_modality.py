"""Two ranks, ZeRO-3 on gloo, each rank given its own modality mix: the one 2-rank modality launcher.

Usage: torchrun --nproc_per_node 2 tests/dist_modality.py BACKBONE STEPS SCHEDULE [lora] [nodummy]

``SCHEDULE`` is ``split`` (rank 0 only images, rank 1 only audio, the same batch every step, so the loss
must fall; tests/test_mixed_modality_dist.py) or ``rotate`` (at step s rank r trains on ``mix_of(s, r)``
of text-only, image-only, audio-only, video: the ranks never hold the same mix and within 8 steps every
mix has met every other; tests/reliability/test_modality_mix_dist.py). ``nodummy`` switches the no-hang
contract (dummy inputs for absent modalities) off, to show that the test can fail. Every collective has a
120 s timeout (gloo) and the caller a wall-clock one: a hang ends as a failure. Each rank writes
``$VITA_RESULT_DIR/rank<r>.json``.
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

from vita.config import ModelConfig
from vita.model import OmniModel, build_model

IMG, VID, AUD = 1000, 1001, 1002
MIXES = ("text", "image", "audio", "video")
LR = {"split": 5e-3, "rotate": 2e-3}


def mix_of(step: int, rank: int, schedule: str) -> str:
    if schedule == "split":
        return ("image", "audio")[rank]
    offset = 1 + (step // 4) % 3  # rank 1 runs 1, 2 or 3 mixes ahead of rank 0, 4 steps each
    return MIXES[(step + rank * offset) % 4]


def make_batch(model, mix: str) -> dict:
    """One fixed batch per mix: 2 samples of 64 tokens with the mix's placeholder blocks."""
    g = torch.Generator().manual_seed(MIXES.index(mix))
    ids = torch.randint(0, 900, (2, 64), generator=g)
    T, out = model.tokens_per_tile, {}
    if mix == "image":  # 2 tiles in sample 0, 1 in sample 1
        ids[0, 2:2 + 2 * T] = IMG
        ids[1, 3:3 + T] = IMG
        out["pixel_values"] = torch.randn(3, 3, 56, 56, generator=g)
    elif mix == "video":  # 3 frames in sample 0
        ids[0, 2:2 + 3 * T] = VID
        out["pixel_values"] = torch.randn(3, 3, 56, 56, generator=g)
    elif mix == "audio":  # one clip per sample, different lengths
        for b, n in enumerate((77, 50)):
            ids[b, 4:4 + model.audio_num_tokens(n)] = AUD
        out["audio_features"] = torch.randn(2, 77, 80, generator=g)
        out["audio_lengths"] = torch.tensor([77, 50])
    labels = ids.clone()
    labels[ids >= IMG] = -100
    return {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids), **out}


def skip_dummies() -> None:
    """Negative control: absent modalities skip their encoders (what VITA-style code without dummies does)."""
    orig = OmniModel.embed

    def embed(self, input_ids, pixel_values=None, audio_features=None, audio_lengths=None, sample_ids=None,
              host_batch=None, **kw):
        saved = self.vision_tower, self.audio_encoder
        if pixel_values is None:
            self.vision_tower = None
        if audio_features is None:
            self.audio_encoder = None
        try:
            return orig(self, input_ids, pixel_values, audio_features, audio_lengths, sample_ids, host_batch, **kw)
        finally:
            self.vision_tower, self.audio_encoder = saved

    OmniModel.embed = embed


def main() -> None:
    backbone, steps, schedule = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    lora = "lora" in sys.argv[4:]
    if "nodummy" in sys.argv[4:]:
        skip_dummies()
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
              "optimizer": {"type": "AdamW", "params": {"lr": LR[schedule], "torch_adam": True}}}
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
                                      config=ds_cfg)
    losses, mixes = [], []
    for step in range(steps):
        mix = mix_of(step, rank, schedule)
        print(f"rank {rank} step {step} {mix}", flush=True)
        out = engine(**make_batch(model, mix))
        loss = out["ce_sum"] / out["num_tokens"] + sum(out["aux"].values())
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
        mixes.append(mix)
    finite = all(math.isfinite(float(p.detach().float().sum())) for p in engine.module.parameters())
    n_lora = sum(getattr(p, "ds_numel", p.numel()) for n, p in model.named_parameters() if "lora_" in n and p.requires_grad)
    result = {"rank": rank, "losses": losses, "mixes": mixes, "local_params_finite": finite, "lora_params": n_lora,
              "aux": sorted(out["aux"])}
    # one file per rank: both ranks printing to one stdout can interleave their lines
    Path(os.environ["VITA_RESULT_DIR"], f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    engine.destroy()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
