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

An arm ends once its last step is logged (its final checkpoint and export measure nothing). ``--budget-s``
bounds the whole run (the device kit's ``launch/device/run.sh`` gives it a share of
a lent GPU's minutes): each arm gets the time left divided among the arms still to run; an arm
stopped at its share is summarised from the steps it logged (``complete: false``), and ``--out`` is
rewritten after every arm, so a cut run still leaves its figures.
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
import time
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


def overrides(a, data: Path, out: Path, packing: bool, *, zero: int = 2, precision: str | None = None,
              name: str | None = None) -> list[str]:
    """The ``vita.run`` overrides of one arm (``a``: this module's arguments, :func:`parse_args`); ``zero``,
    ``precision`` (default: fp32 with ``--smoke``, else bf16) and ``name`` serve other runs of the same set-up
    (tests/test_gpu_checks.py)."""
    smoke = a.smoke
    attn = "sdpa"
    if not smoke:
        import importlib.util

        attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    shape = "{vocab_size:1024}" if smoke else "{vocab_size:151936}"
    name = name or f"gpu-bench-{'packed' if packing else 'padded'}"
    precision = precision or ("fp32" if smoke else "bf16")
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
        f"data.num_workers={0 if smoke else a.workers}", f"engine=zero{zero}", f"engine.precision={precision}",
        f"engine.optimizer_impl={a.optimizer_impl}", f"engine.micro_batch_size={a.micro_batch}",
        f"engine.peak_tflops={a.peak_tflops}", f"train.max_steps={a.steps}", "train.log_every=1",
        "logging.loggers=[jsonl]", "logging.progress_bar=false", "logging.plot=false", "optim.warmup_steps=0",
    ]


def summarize(metrics: Path, skip: int) -> dict:
    """Averages over the logged steps after the first ``skip`` (all of them when a cut arm logged no more)."""
    every = []
    for line in metrics.read_text().splitlines() if metrics.is_file() else []:
        try:
            every.append(json.loads(line))
        except json.JSONDecodeError:  # a last line cut by the arm's stop
            continue
    every = [r for r in every if "step_time_s" in r]
    rows = every[skip:] or every
    if not rows:
        raise SystemExit(f"{metrics}: no training steps logged")
    time_s = sum(r["step_time_s"] for r in rows)
    tokens = sum(r["tokens_per_s"] * r["step_time_s"] for r in rows)
    samples = sum(r["samples_per_s"] * r["step_time_s"] for r in rows)
    flops = sum(r["flops_per_step"] for r in rows)
    return {"steps": len(rows), "step_ms": 1e3 * statistics.median(r["step_time_s"] for r in rows),
            "tokens_per_s": tokens / time_s, "samples_per_s": samples / time_s, "tflops": flops / time_s / 1e12,
            "mfu": statistics.fmean(r.get("mfu", float("nan")) for r in rows), "loss": rows[-1]["loss"],
            "skipped": len(every) - len(rows)}


def logged_steps(run_root: Path) -> int:
    """Training steps in the arm's ``metrics.jsonl`` so far (0 before it exists)."""
    found = sorted(run_root.rglob("metrics.jsonl")) if run_root.is_dir() else []
    if not found:
        return 0
    return sum(1 for x in found[0].read_text().splitlines() if '"step_time_s"' in x)


def run_arm(cmd: list[str], env: dict, seconds: float | None, run_root: Path, steps: int) -> bool:
    """Run one arm until its ``steps`` are logged (its final checkpoint and export are not waited for: they measure
    nothing and on a GPU cost tens of seconds), or for ``seconds`` at most (None: no limit). True when every step
    was logged."""
    proc = subprocess.Popen(cmd, env=env)
    deadline = None if seconds is None else time.monotonic() + seconds
    while proc.poll() is None:
        if logged_steps(run_root) >= steps:
            proc.kill()
            proc.wait()
            return True
        if deadline is not None and time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            print(f"arm stopped at its budget of {seconds:.0f} s", flush=True)
            return False
        time.sleep(0.5)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed with exit code {proc.returncode}")
    return True


def environment() -> dict:
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda, "device": gpu}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=80, help="optimizer steps per arm")
    ap.add_argument("--skip", type=int, default=20, help="first steps left out of the averages")
    ap.add_argument("--micro-batch", type=int, default=8, help="samples per step")
    ap.add_argument("--max-length", type=int, default=4096)
    ap.add_argument("--samples", type=int, default=1200, help="synthetic samples written")
    ap.add_argument("--workers", type=int, default=12, help="data workers")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="per-GPU peak at bf16 (dense)")
    ap.add_argument("--optimizer-impl", default="auto", choices=("auto", "fused", "torch"),
                    help="engine.optimizer_impl (torch when DeepSpeed's fused Adam cannot be built)")
    ap.add_argument("--budget-s", type=float, default=0.0, help="stop the arms after this many seconds in all (0: none)")
    ap.add_argument("--smoke", action="store_true", help="tiny models on CPU: check the path, measure nothing")
    ap.add_argument("--out", type=Path, default=None, help="write the table's figures here as JSON")
    a = ap.parse_args(argv)
    if a.smoke:
        a.max_length, a.samples, a.micro_batch = min(a.max_length, 2048), min(a.samples, 24), min(a.micro_batch, 2)
        a.steps, a.skip = min(a.steps, 4), min(a.skip, 1)
    return a


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    deadline = time.monotonic() + a.budget_s if a.budget_s > 0 else None
    what = "SMOKE: tiny-qwen2 + tiny-internvit, fp32, CPU" if a.smoke else "Qwen2.5-0.5B + InternViT-300M shapes, bf16"
    what += f", ZeRO-2, micro-batch {a.micro_batch}, max_length {a.max_length}, peak {a.peak_tflops} TFLOP/s"
    arms = ("padded", "packed")
    results: dict = {"what": what, "environment": environment(), "complete": False}  # + one entry per arm run
    with tempfile.TemporaryDirectory(prefix="vita-gpu-bench-") as tmp:
        data = write_dataset(Path(tmp) / "data", a.samples, max_words=100 if a.smoke else 1000)
        for k, arm in enumerate(arms):
            out = Path(tmp) / "runs"
            seconds = None if deadline is None else max(1.0, (deadline - time.monotonic()) / (len(arms) - k))
            done = run_arm([sys.executable, "-m", "vita.run", *overrides(a, data, out, arm == "packed")],
                           {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}, seconds,
                           out / f"gpu-bench-{arm}", a.steps)
            found = sorted((out / f"gpu-bench-{arm}").rglob("metrics.jsonl"))
            try:
                results[arm] = {**summarize(found[0], a.skip), "complete": done}
            except (IndexError, SystemExit):  # cut before its first logged step
                print(f"{arm}: no step logged before the budget ran out", flush=True)
            if a.out:
                a.out.write_text(json.dumps(results, indent=2) + "\n")
    results["complete"] = all(results.get(arm, {}).get("complete") for arm in arms)
    print(f"\n{what}")
    print(f"| {'packing':8} | {'steps':>5} | {'ms/step':>8} | {'tokens/s':>9} | {'samples/s':>9} | {'TFLOP/s':>8} "
          f"| {'MFU':>6} | {'last loss':>9} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for arm in (x for x in arms if x in results):
        r = results[arm]
        print(f"| {arm:8} | {r['steps']:>5} | {r['step_ms']:>8.1f} | {r['tokens_per_s']:>9.0f} | "
              f"{r['samples_per_s']:>9.2f} | {r['tflops']:>8.2f} | {r['mfu']:>6.1%} | {r['loss']:>9.4f} |")
    if "packed" in results and "padded" in results:
        ratio = results["packed"]["samples_per_s"] / results["padded"]["samples_per_s"]
        print(f"packing speed-up (samples/s, packed / padded): {ratio:.2f}x")
    if a.out:
        a.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
