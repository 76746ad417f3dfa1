"""Peak memory per rank for one long sample at ``engine.sequence_parallel`` 1 and 2, and the paper estimate.

Measured: the tiny Qwen2 (``tiny-qwen2``: 2 layers, hidden 64, 4 heads, vocab 1,024; fp32, sdpa, the
chunked loss) through :class:`~vita.model.omni.OmniModel`, forward + backward of one unpadded text
sample of ``tokens`` tokens. SP=1 runs in one process; SP=2 on two gloo ranks (torchrun), each holding
half the sequence. Each process reads its peak RSS (``ru_maxrss``) before and after; the difference is
the memory the step added (activations, their gradients, the gathered attention inputs). Two lengths
per arm give the bytes per token, hence the longest sample that fits a per-rank budget. Nothing is
asserted.

On paper (:func:`paper_estimate`): the longest sample per 80 GB GPU for VITA-1.5's sizes with ZeRO-3 over
8 GPUs and gradient checkpointing, from the formula in docs/long_context.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

MB = 1 << 20
GB = 1e9


def _child(tokens: int, sp: int, out: Path) -> None:
    import torch
    from omegaconf import OmegaConf

    from vita.config import ModelConfig
    from vita.model import build_model

    if sp > 1:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False,
                                   timeout=datetime.timedelta(minutes=10))
    torch.manual_seed(0)
    model = build_model(OmegaConf.structured(ModelConfig(backbone="tiny-qwen2")), vocab_size=1024)
    model.fused_loss = "chunked"
    rank = 0
    if sp > 1:
        from vita.model.sequence_parallel import SequenceParallel

        model.sequence_parallel = SequenceParallel(sp)
        rank = torch.distributed.get_rank()
    ids = torch.randint(0, 1000, (1, tokens), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    res = model(**batch, host_batch=batch)
    (res["ce_sum"] / tokens).backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(out, f"sp{sp}_{tokens}_rank{rank}.json").write_text(json.dumps(
        {"sp": sp, "tokens": tokens, "rank": rank, "added_mb": (peak - before) / MB}))
    if sp > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(tokens: int, sp: int, out: Path) -> float:
    """Peak MB added per rank (the larger rank's) for one sample of ``tokens`` at sequence parallel ``sp``."""
    child = ["-m", "vita.bench.sp_memory", "--child", "--tokens", str(tokens), "--sp", str(sp), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if sp == 1:
        cmd = [sys.executable, *child]
    else:
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        cmd = [torchrun, "--nproc_per_node", str(sp), "--master_port", str(_free_port()), *child]
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return max(json.loads(p.read_text())["added_mb"] for p in out.glob(f"sp{sp}_{tokens}_rank*.json"))


def run(tokens: int = 16384, budget_mb: float = 256.0) -> dict:
    """SP 1 and 2 at ``tokens`` and ``tokens // 2``; the longest sample within ``budget_mb`` per rank (linear fit)."""
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for sp in (1, 2):
            small, big = measure(tokens // 2, sp, Path(tmp)), measure(tokens, sp, Path(tmp))
            per_token = (big - small) / (tokens - tokens // 2)
            fixed = big - per_token * tokens
            longest = int((budget_mb - fixed) / per_token) if per_token > 0 else None
            rows.append({"sp": sp, "tokens": tokens, "mb_half": small, "mb": big, "kb_per_token": per_token * 1024,
                         "longest_in_budget": longest})
    return {"rows": rows, "ratio": rows[1]["mb"] / rows[0]["mb"], "budget_mb": budget_mb,
            "paper": paper_estimate()}


# -- on paper ---------------------------------------------------------------------------------------
VITA15 = {"llm_params": 7.62e9, "vision_params": 0.30e9, "audio_params": 0.35e9, "hidden": 3584, "layers": 28,
          "intermediate": 18944, "heads": 28}


def paper_estimate(gpu_gb: float = 80.0, world: int = 8, tiles: int = 8, usable: float = 0.9,
                   sizes: dict = VITA15) -> list[dict]:
    """Longest sample (tokens) per GPU at SP 1, 2, 4, 8: ZeRO-3 over ``world`` GPUs, bf16 + fp32 Adam, gradient
    checkpointing, tiled MLP in ``tiles``, chunked loss, flash attention (O(L) memory). Formula: docs/long_context.md."""
    h, n_layers, inter = sizes["hidden"], sizes["layers"], sizes["intermediate"]
    params = sizes["llm_params"] + sizes["vision_params"] + sizes["audio_params"]
    states = 16 * params / world  # bf16 weights + bf16 grads + fp32 master, Adam m and v: 16 B/param, sharded
    working = 2 * 2 * (4 * h * h + 3 * h * inter)  # one layer's gathered bf16 weights, prefetch of the next
    loss = 2 * 4 * 4096 * 152064  # one chunk of fp32 logits + their gradient (chunked loss)
    fixed = states + working + loss + 2 * GB  # + CUDA context, allocator slack, comm buffers
    per_token_sharded = 2 * h * n_layers + 24 * h + 16 * inter / tiles  # checkpoints + one layer's recompute
    per_token_full = 4 * h  # the gathered encoder features (bf16) + gradient, on every rank: counts every token as media
    rows = []
    for sp in (1, 2, 4, 8):
        per_token = per_token_sharded / sp + per_token_full
        longest = (usable * gpu_gb * GB - fixed) / per_token
        rows.append({"sp": sp, "fixed_gb": fixed / GB, "bytes_per_token": per_token, "longest_tokens": int(longest),
                     "ulysses_ok": sizes["heads"] % sp == 0})
    return rows


def table(res: dict) -> list[str]:
    out = ["| sequence_parallel | MB added per rank at " + f"{res['rows'][0]['tokens'] // 2:,} tokens | at "
           f"{res['rows'][0]['tokens']:,} tokens | KB per token | longest sample in {res['budget_mb']:.0f} MB per rank |",
           "|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        out.append(f"| {r['sp']} | {r['mb_half']:.0f} | {r['mb']:.0f} | {r['kb_per_token']:.2f} | "
                   f"{r['longest_in_budget']:,} |")
    out += ["", f"SP 2 / SP 1 at {res['rows'][0]['tokens']:,} tokens: **{res['ratio']:.2f}×** (goal of issue 22: ≤ 0.6×).",
            "", "On paper, VITA-1.5 sizes (Qwen2.5-7B + InternViT-300M + audio encoder, all trained), 8 × 80 GB, "
            "ZeRO-3, gradient checkpointing, tiled MLP (8 tiles), chunked loss, flash attention; formula in "
            "docs/long_context.md:", "",
            "| sequence_parallel | fixed per GPU (GB) | bytes per token per GPU | longest sample (tokens) |",
            "|---:|---:|---:|---:|"]
    for r in res["paper"]:
        note = "" if r["ulysses_ok"] else " (needs heads divisible by 8: Qwen2.5-7B has 28)"
        out.append(f"| {r['sp']} | {r['fixed_gb']:.1f} | {r['bytes_per_token']:,.0f} | {r['longest_tokens']:,}{note} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--sp", type=int, default=1)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.child:
        _child(a.tokens, a.sp, a.out)
    else:
        print(json.dumps(run(a.tokens), indent=1))


if __name__ == "__main__":
    main()
