"""Peak memory and time of importing a VITA folder (``python -m vita.bench import``).

Writes a synthetic VITA-1.5-layout checkpoint (``vita-Qwen2``, Qwen2.5-1.5B-shaped LLM = 1.54 B
parameters, tiny vision / audio parts, bfloat16, 1 GB shards + index), imports it with
:func:`vita.interop.load_vita` (``dtype="auto"``) in a fresh subprocess, and reports that
process's peak resident memory (``ru_maxrss``) against the checkpoint's size on disk, and the
import time. The checkpoint is deleted afterwards unless ``keep``.

``python -m vita.bench.interop_import --zero3`` measures what ``stage.init_from=vita:PATH`` does at
world 2 under ZeRO-3 (gloo, bf16): each rank's peak RSS building the model in its partitions and
streaming the folder in, against the old path (every rank loads the whole model), and the elements
each rank holds after.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

LLM_1_5B = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0,
                rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu", bos_token_id=151643,
                eos_token_id=151645, use_sliding_window=False, max_window_layers=28)
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=56,
             patch_size=14, attention_bias=True)
AUDIO = dict(n_mels=80, d=32, heads=2, ffn=64, layers=2)

_MEASURE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from vita.interop import load_vita
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
base = rss()
t1 = time.perf_counter()
vm = load_vita(sys.argv[1], dtype="auto", progress=False)
t2 = time.perf_counter()
n = sum(p.numel() for p in vm.model.parameters())
dtypes = sorted({str(p.dtype) for p in vm.model.parameters()})
print(json.dumps({"import_s": t2 - t1, "startup_s": t1 - t0, "baseline_rss": base, "end_rss": rss(),
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "params": n,
                  "dtypes": dtypes}))
"""


_MEASURE_ZERO3 = r"""
import json, os, resource, sys, time
import deepspeed, torch
deepspeed.init_distributed("gloo")
from vita.engine.partitioned import held_elements
from vita.interop import compose_from_vita, build_vita_model
imported, _ = compose_from_vita(sys.argv[1])
world = torch.distributed.get_world_size()
ds = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "train_batch_size": world,
      "zero_optimization": {"stage": 3}, "bf16": {"enabled": True}}
t0 = time.perf_counter()
model = build_vita_model(imported.model, sys.argv[1], dtype=torch.bfloat16, progress=False,
                         ds_config=ds if sys.argv[2] == "partitioned" else None)
t1 = time.perf_counter()
held, total, _ = held_elements(model)
print(json.dumps({"rank": torch.distributed.get_rank(), "import_s": t1 - t0, "held": held, "total": total,
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}), flush=True)
"""


def run_zero3(workdir: str | None = None, world: int = 2) -> dict:
    """Per-rank peak RSS of a ZeRO-3 ``vita:`` import at ``world`` ranks: in partitions vs whole on each rank."""
    import os

    root = Path(tempfile.mkdtemp(prefix="vita_import_bench_", dir=workdir))
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    out: dict = {}
    try:
        out.update(write_synthetic(root / "VITA_ckpt"))
        for mode in ("partitioned", "whole"):
            env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
            proc = subprocess.run([torchrun, "--nproc_per_node", str(world), str(_script(root)), str(root / "VITA_ckpt"),
                                   mode], capture_output=True, text=True, env=env, check=False)
            rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"rank"')]
            if len(rows) != world:
                raise RuntimeError(f"zero3 import ({mode}) failed:\n{proc.stderr[-3000:]}")
            out[mode] = sorted(rows, key=lambda r: r["rank"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def _script(root: Path) -> Path:
    f = root / "measure_zero3.py"
    f.write_text(_MEASURE_ZERO3)
    return f


def write_synthetic(folder: Path, shard_bytes: int = 2**30) -> dict:
    """The synthetic checkpoint in ``folder``; returns its parameter count and size on disk."""
    from omegaconf import OmegaConf

    from vita.config import ASSETS, CONF_DIR, ModelConfig
    from vita.interop.keys import plan_keys
    from vita.interop.meta import params_on_meta
    from vita.interop.writer import copy_tokenizer, write_config, write_shards
    from vita.model import build_model

    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(CONF_DIR / "model" / "vita15_qwen2p5_7b.yaml"),
                          {"overrides": LLM_1_5B, "pretrained": None, "vision": {"overrides": TOWER, "pretrained": None},
                           "audio": {"overrides": AUDIO, "pretrained": None}})  # shapes only: no hub weights
    with params_on_meta():
        model = build_model(cfg)
    plan = plan_keys(model)
    g = torch.Generator().manual_seed(0)

    def produce(name: str) -> torch.Tensor:
        t = torch.empty(plan.vita15_shapes[name], dtype=torch.bfloat16)
        return t.uniform_(-0.02, 0.02, generator=g) if t.numel() < 2**22 else t.fill_(0.01)

    entries = [(n, s, torch.bfloat16) for n, s in plan.vita15_shapes.items()]
    write_shards(folder, entries, produce, shard_bytes, progress=False)
    config = {"architectures": ["VITAQwen2ForCausalLM"], "model_type": "vita-Qwen2", **LLM_1_5B,
              "torch_dtype": "bfloat16", "mm_vision_tower": "InternViT-300M-448px", "mm_hidden_size": 128,
              "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -1, "image_aspect_ratio": "square",
              "mm_audio_encoder": "audio-encoder", "mm_vision_tower_config": {"num_attention_heads": 2}}
    write_config(folder, config)
    copy_tokenizer(ASSETS / "tokenizers" / "chatterbot-bpe", folder)
    disk = sum(f.stat().st_size for f in folder.glob("model-*.safetensors"))
    return {"params": plan.numel(), "disk_bytes": disk, "shards": len(list(folder.glob("model-*.safetensors")))}


def run(workdir: str | None = None, keep: bool = False) -> dict:
    """Write, import in a subprocess, measure, clean up."""
    root = Path(tempfile.mkdtemp(prefix="vita_import_bench_", dir=workdir))
    try:
        info = write_synthetic(root / "VITA_ckpt")
        proc = subprocess.run([sys.executable, "-c", _MEASURE, str(root / "VITA_ckpt")], capture_output=True,
                              text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"import subprocess failed:\n{proc.stderr[-3000:]}")
        m = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    disk = info["disk_bytes"]
    return {**info, **m, "peak_over_disk": m["peak_rss"] / disk,
            "peak_minus_baseline_over_disk": (m["peak_rss"] - m["baseline_rss"]) / disk}


def table(r: dict) -> list[str]:
    gib = 2**30
    return ["| checkpoint | size on disk | peak RSS | peak / disk | (peak − startup RSS) / disk | import time |",
            "|---|---:|---:|---:|---:|---:|",
            f"| vita-Qwen2, {r['params'] / 1e9:.2f} B params, bf16, {r['shards']} shards | {r['disk_bytes'] / gib:.2f} GiB "
            f"| {r['peak_rss'] / gib:.2f} GiB | {r['peak_over_disk']:.2f} × | {r['peak_minus_baseline_over_disk']:.2f} × "
            f"| {r['import_s']:.1f} s |"]


if __name__ == "__main__":
    if "--zero3" in sys.argv:
        print(json.dumps(run_zero3(), indent=1))
    else:
        print(json.dumps(run(keep="--keep" in sys.argv), indent=1))
