"""Two gloo ranks: the sequence-parallel forward/backward (SP=2) against the plain one, case by case.

Usage: torchrun --nproc_per_node 2 tests/dist_sp.py

Every rank builds the same tiny omni model (seed 0) and, for each case (text, image, video, audio;
unpacked with padding, packed; an odd length that the cut pads; gradient checkpointing; tiled MLP; LoRA),
computes the reference loss and gradients alone (``sequence_parallel`` off), then its share with
SP=2; the shares' losses and gradients summed over the group must equal the reference
(tests/test_sequence_parallel.py reads the differences). Each rank writes ``$VITA_RESULT_DIR/rank<r>.json``.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from vita.config import ModelConfig
from vita.model import build_model
from vita.model.omni import count_label_tokens
from vita.model.sequence_parallel import SequenceParallel
from vita.model.tiled import tile_mlps

IMG, VID, AUD = 1000, 1001, 1002
KINDS = ("text", "image", "video", "audio")


def make_batch(model, kind: str, length: int, packed: bool) -> dict:
    """2 rows of ``length`` tokens with ``kind``'s placeholder blocks; row 1 padded (unpacked) or two samples
    per row (packed: position ids restart)."""
    g = torch.Generator().manual_seed(KINDS.index(kind) + 10 * length + packed)
    ids = torch.randint(0, 900, (2, length), generator=g)
    T, out = model.tokens_per_tile, {}
    if kind == "image":  # 2 tiles in row 0, 1 in row 1, the first block across the middle (the cut)
        mid = length // 2 - T
        ids[0, mid:mid + 2 * T] = IMG
        ids[1, 3:3 + T] = IMG
        out["pixel_values"] = torch.randn(3, 3, 56, 56, generator=g)
    elif kind == "video":  # 4 frames in row 0
        ids[0, 20:20 + 4 * T] = VID
        out["pixel_values"] = torch.randn(4, 3, 56, 56, generator=g)
    elif kind == "audio":  # one clip per row, different lengths, row 0's across the cut
        n0 = model.audio_num_tokens(77)
        ids[0, length // 2 - n0 // 2:length // 2 - n0 // 2 + n0] = AUD
        ids[1, 4:4 + model.audio_num_tokens(50)] = AUD
        out["audio_features"] = torch.randn(2, 77, 80, generator=g)
        out["audio_lengths"] = torch.tensor([77, 50])
    labels = ids.clone()
    labels[ids >= IMG] = -100
    mask = torch.ones_like(ids)
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask, **out}
    if packed:
        cut = length // 2 + 5
        pos = torch.cat([torch.arange(cut), torch.arange(length - cut)]).expand(2, -1).clone()
        labels[:, cut] = -100  # a sample's first token is never a target of the previous one
        batch["position_ids"] = pos
    else:
        mask[1, length - 9:] = 0
        labels[1, length - 9:] = -100
    return batch


def grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def run_case(model, sp, batch) -> dict:
    tokens = count_label_tokens(batch["labels"])
    host = {k: v for k, v in batch.items()}
    model.sequence_parallel = None
    ref = model(**batch, host_batch=host)
    (ref["ce_sum"] / tokens).backward()
    ref_grads = grads(model)
    model.sequence_parallel = sp
    seen: dict[str, list[int]] = {"vision": [], "audio": []}  # rows each encoder call got on this rank
    hooks = [m.register_forward_hook(lambda mod, args, res, k=k: seen[k].append(args[0].shape[0]))
             for k, m in (("vision", model.vision_tower), ("audio", model.audio_encoder))]
    out = model(**batch, host_batch=host)
    for h in hooks:
        h.remove()
    (out["ce_sum"] / tokens).backward()
    sp.end()
    model.sequence_parallel = None
    sp_grads = grads(model)
    ce = out["ce_sum"].detach().clone()
    dist.all_reduce(ce, group=sp.group)
    n = out["num_tokens"].clone()
    dist.all_reduce(n, group=sp.group)
    worst, where = 0.0, ""
    for name, g in ref_grads.items():
        s = sp_grads.get(name, torch.zeros_like(g))
        dist.all_reduce(s, group=sp.group)
        d = float((s - g).abs().max())
        if d > worst:
            worst, where = d, name
    enc = [n for n in ref_grads if n.startswith(("vision", "audio")) and float(ref_grads[n].abs().sum()) > 0]
    return {"loss_ref": float(ref["ce_sum"].detach()) / tokens, "loss_sp": float(ce) / tokens, "tokens_ref": tokens,
            "tokens_sp": int(n), "grad_diff": worst, "grad_diff_at": where, "encoder_grads": len(enc),
            "share": out["num_tokens"].item(), "encoded_rows": seen,
            "media_rows": int(batch["pixel_values"].shape[0] if "pixel_values" in batch else
                              batch["audio_features"].shape[0] if "audio_features" in batch else 0)}


def main() -> None:
    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False,
                               timeout=datetime.timedelta(seconds=120))
    torch.manual_seed(0)
    cfg = OmegaConf.structured(ModelConfig(backbone="tiny-qwen2"))
    cfg.vision.tower, cfg.audio.encoder = "tiny-internvit", "tiny-vita"
    model = build_model(cfg, vocab_size=1024).double()  # fp64: the comparison measures the method, not rounding
    model.set_media_token_ids(IMG, VID, AUD)
    model.train()
    for m in model.modules():  # the audio encoder's dropout would draw different masks in the two runs
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    sp = SequenceParallel(2)
    results = {}
    for kind in KINDS:
        for packed in (False, True):
            results[f"{kind}-{'packed' if packed else 'unpacked'}"] = run_case(model, sp, make_batch(model, kind, 96, packed))
    results["text-odd-length"] = run_case(model, sp, make_batch(model, "text", 95, False))
    model.fused_loss = "chunked"
    results["image-chunked-loss"] = run_case(model, sp, make_batch(model, "image", 96, True))
    model.fused_loss = "off"
    model.gradient_checkpointing_enable()
    results["audio-grad-ckpt"] = run_case(model, sp, make_batch(model, "audio", 96, False))
    tile_mlps(model.llm, 5)  # 48 tokens a rank: padded to 50, 5 tiles
    results["video-ckpt-tiled-mlp"] = run_case(model, sp, make_batch(model, "video", 96, True))
    from peft import LoraConfig, get_peft_model

    model.llm = get_peft_model(model.llm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    results["image-lora"] = run_case(model, sp, make_batch(model, "image", 96, False))
    Path(os.environ["VITA_RESULT_DIR"], f"rank{dist.get_rank()}.json").write_text(json.dumps(results, indent=1))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
