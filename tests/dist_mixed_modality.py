"""Two ranks, ZeRO-3 on gloo: rank 0's batches carry only images, rank 1's only audio.

Run by tests/test_mixed_modality_dist.py under torchrun. Each rank prints its losses; the
no-hang contract (dummy inputs for the absent modality) is what keeps the ranks in step.
Usage: torchrun --nproc_per_node 2 tests/dist_mixed_modality.py BACKBONE [lora] [nodummy]
(``nodummy`` switches the contract off, to show that the test can fail.)
"""

from __future__ import annotations

import datetime
import json
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
STEPS = 20


def make_batch(model, rank: int, step: int) -> dict:
    g = torch.Generator().manual_seed(1000 * rank)  # the same batch every step, so the loss must fall
    ids = torch.randint(0, 900, (2, 48), generator=g)
    out = {}
    if rank == 0:  # images only: 2 tiles in sample 0, 1 in sample 1
        T = model.tokens_per_tile
        ids[0, 2:2 + 2 * T] = IMG
        ids[1, 3:3 + T] = IMG
        out["pixel_values"] = torch.randn(3, 3, 56, 56, generator=g)
    else:  # audio only: one clip per sample, different lengths
        lens = [77, 50]
        for b, n in enumerate(lens):
            k = model.audio_num_tokens(n)
            ids[b, 4:4 + k] = AUD
        out["audio_features"] = torch.randn(2, 77, 80, generator=g)
        out["audio_lengths"] = torch.tensor(lens)
    labels = ids.clone()
    labels[ids >= IMG] = -100
    return {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids), **out}


def skip_dummies() -> None:
    """Negative control: absent modalities skip their encoders (what VITA-style code without dummies does)."""
    orig = OmniModel.embed

    def embed(self, input_ids, pixel_values=None, audio_features=None, audio_lengths=None, sample_ids=None,
              host_batch=None):
        saved = self.vision_tower, self.audio_encoder
        if pixel_values is None:
            self.vision_tower = None
        if audio_features is None:
            self.audio_encoder = None
        try:
            return orig(self, input_ids, pixel_values, audio_features, audio_lengths, sample_ids, host_batch)
        finally:
            self.vision_tower, self.audio_encoder = saved

    OmniModel.embed = embed


def main() -> None:
    backbone = sys.argv[1]
    lora = "lora" in sys.argv[2:]
    if "nodummy" in sys.argv[2:]:
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
    params = [p for p in model.parameters() if p.requires_grad]
    ds_cfg = {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "train_batch_size": 4,
              "gradient_clipping": 1.0, "steps_per_print": 10**9,
              "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
              "optimizer": {"type": "AdamW", "params": {"lr": 5e-3, "torch_adam": True}}}
    engine, *_ = deepspeed.initialize(model=model, model_parameters=params, config=ds_cfg)
    losses = []
    for step in range(STEPS):
        batch = make_batch(model, rank, step)
        out = engine(**batch)
        loss = out["ce_sum"] / out["num_tokens"] + sum(out["aux"].values())
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
    n_lora = sum(getattr(p, "ds_numel", p.numel()) for n, p in model.named_parameters() if "lora_" in n and p.requires_grad)
    result = {"rank": rank, "losses": losses, "lora_params": n_lora, "aux": sorted(out["aux"])}
    # one file per rank: both ranks printing to one stdout can interleave their lines
    Path(os.environ["VITA_RESULT_DIR"], f"rank{rank}.json").write_text(json.dumps(result))
    print("RESULT", rank, flush=True)
    dist.barrier()
    engine.destroy()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
