"""``python -m vita.bench.gpu`` (run by ``launch/gpu_bench.sh``): tokens/s and MFU on one GPU, packing on vs off.

Model: Qwen2.5-0.5B shapes (vocab 151,936) + InternViT-300M-448px shapes + VITA's MLP projector,
random init, bf16, DeepSpeed ZeRO-2, stage ``full`` (everything trained). Data: a synthetic
VITA-format set written here (no download): 60% image samples (random-colour JPEGs whose aspect
ratio gives 1-6 tiles + thumbnail, 256 tokens each) and 40% text-only, answers of 20-1,000 random
words, so lengths vary as in VITA's mixture. The padded arm draws micro-batches of
``--micro-batch`` samples with VITA's ``modality_length_grouped`` sampler (``data.packing=false``);
the packed arm packs the same samples across the batch into ``--micro-batch`` rows of
``max_length`` per micro-batch (``data.sampler=token_budget``, ``data.packing=true``).

Each arm is one ``python -m vita.run`` (so the figures are the training log's own): the table
averages the logged steps after ``--skip`` warm-up steps: tokens/s = non-pad tokens / step time
(data loading excluded, as in the log), TFLOP/s and MFU by ``vita.engine.flops`` against
``--peak-tflops`` (default 989: H100/H200 SXM bf16 dense). ``--smoke`` runs the same path with tiny
models on CPU in fp32 (a check of the script, not a benchmark).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = ("the a cat sat on mat photo of sky blue red green tree house river light dark small large "
         "image shows there is are with and under over near far left right top bottom").split()


def write_dataset(root: Path, n: int, seed: int = 0, max_words: int = 1500) -> Path:
    """A VITA-format JSONL with images under ``root/img``; returns the JSONL path."""
    from PIL import Image

    rng = random.Random(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, max_words)))
        conv = [{"from": "human", "value": "Describe this."}, {"from": "gpt", "value": words}]
        row = {"id": f"s{i}", "conversations": conv}
        if rng.random() < 0.6:
            cols = rng.randint(1, 6)
            name = f"{i}.jpg"
            colour = tuple(rng.randrange(256) for _ in range(3))
            Image.new("RGB", (448 * cols, 448), colour).save(root / "img" / name, quality=85)
            row["image"] = name
            conv[0]["value"] = "<image>\n" + conv[0]["value"]
        lines.append(json.dumps(row))
    path = root / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def overrides(a, data: Path, out: Path, packing: bool) -> list[str]:
    """The ``vita.run`` overrides of one arm."""
    smoke = a.smoke
    attn = "sdpa"
    if not smoke:
        import importlib.util

        attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    shape = "{vocab_size:1024}" if smoke else "{vocab_size:151936}"
    name = f"gpu-bench-{'packed' if packing else 'padded'}"
    return [
        f"name={name}", f"output_root={out}", f"hydra.run.dir={out / name}", "experiment=chatterbot_tiny", "model=tiny_omni",
        f"model.backbone={'tiny-qwen2' if smoke else 'qwen2.5-0.5b'}", f"++model.overrides={shape}",
        f"model.vision.tower={'tiny-internvit' if smoke else 'internvit'}", "model.audio.encoder=null",
        f"model.attn_implementation={attn}", "data=demo", "data.name=synthetic", "data.state_tokens=false",
        f"data.datasets=[{{name:synthetic,annotations:[{data}],image_root:{data.parent / 'img'}}}]",
        f"data.max_length={a.max_length}", f"data.packing={packing}",
        # packed: across the batch (token_budget, micro_batch rows of max_length); padded: VITA's sampler
        *(["data.sampler=token_budget", f"data.token_budget={a.micro_batch * a.max_length}"] if packing
          else ["data.sampler=modality_length_grouped"]),
        f"data.num_workers={0 if smoke else a.workers}", "engine=zero2",
        f"engine.precision={'fp32' if smoke else 'bf16'}", f"engine.micro_batch_size={a.micro_batch}",
        f"engine.peak_tflops={a.peak_tflops}", f"train.max_steps={a.steps}", "train.log_every=1",
        "logging.loggers=[jsonl]", "logging.progress_bar=false", "logging.plot=false", "optim.warmup_steps=0",
    ]


def summarize(metrics: Path, skip: int) -> dict:
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()][skip:]
    if not rows:
        raise SystemExit(f"{metrics}: no steps after the first {skip}")
    time_s = sum(r["step_time_s"] for r in rows)
    tokens = sum(r["tokens_per_s"] * r["step_time_s"] for r in rows)
    samples = sum(r["samples_per_s"] * r["step_time_s"] for r in rows)
    flops = sum(r["flops_per_step"] for r in rows)
    return {"steps": len(rows), "step_ms": 1e3 * statistics.median(r["step_time_s"] for r in rows),
            "tokens_per_s": tokens / time_s, "samples_per_s": samples / time_s, "tflops": flops / time_s / 1e12,
            "mfu": statistics.fmean(r.get("mfu", float("nan")) for r in rows), "loss": rows[-1]["loss"]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=80, help="optimizer steps per arm")
    ap.add_argument("--skip", type=int, default=20, help="first steps left out of the averages")
    ap.add_argument("--micro-batch", type=int, default=8, help="samples per step")
    ap.add_argument("--max-length", type=int, default=4096)
    ap.add_argument("--samples", type=int, default=1200, help="synthetic samples written")
    ap.add_argument("--workers", type=int, default=12, help="data workers")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="per-GPU peak at bf16 (dense)")
    ap.add_argument("--smoke", action="store_true", help="tiny models on CPU: check the path, measure nothing")
    ap.add_argument("--out", type=Path, default=None, help="write the table's figures here as JSON")
    a = ap.parse_args(argv)
    if a.smoke:
        a.max_length, a.samples, a.micro_batch = min(a.max_length, 2048), min(a.samples, 24), min(a.micro_batch, 2)
        a.steps, a.skip = min(a.steps, 4), min(a.skip, 1)
    results = {}
    with tempfile.TemporaryDirectory(prefix="vita-gpu-bench-") as tmp:
        data = write_dataset(Path(tmp) / "data", a.samples, max_words=100 if a.smoke else 1000)
        for packing in (False, True):
            out = Path(tmp) / "runs"
            subprocess.run([sys.executable, "-m", "vita.run", *overrides(a, data, out, packing)], check=True,
                           env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
            (metrics,) = (out / f"gpu-bench-{'packed' if packing else 'padded'}").rglob("metrics.jsonl")
            results["packed" if packing else "padded"] = summarize(metrics, a.skip)
    what = "SMOKE: tiny-qwen2 + tiny-internvit, fp32, CPU" if a.smoke else "Qwen2.5-0.5B + InternViT-300M shapes, bf16"
    print(f"\n{what}, ZeRO-2, micro-batch {a.micro_batch}, max_length {a.max_length}, peak {a.peak_tflops} TFLOP/s")
    print(f"| {'packing':8} | {'steps':>5} | {'ms/step':>8} | {'tokens/s':>9} | {'samples/s':>9} | {'TFLOP/s':>8} "
          f"| {'MFU':>6} | {'last loss':>9} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for arm, r in results.items():
        print(f"| {arm:8} | {r['steps']:>5} | {r['step_ms']:>8.1f} | {r['tokens_per_s']:>9.0f} | "
              f"{r['samples_per_s']:>9.2f} | {r['tflops']:>8.2f} | {r['mfu']:>6.1%} | {r['loss']:>9.4f} |")
    ratio = results["packed"]["samples_per_s"] / results["padded"]["samples_per_s"]
    print(f"packing speed-up (samples/s, packed / padded): {ratio:.2f}x")
    if a.out:
        a.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
