"""``python -m vita.bench [engine] [tokens] [data]``: run benchmark suites (all by default) and
rewrite ``docs/BENCHMARKS.md``.

Each suite's figures, with the exact command, the machine and the date, are kept in
``docs/benchmarks.json``; the Markdown file is rendered from it in full on every run, so running
one suite refreshes its section and keeps the others' last figures (each with its own date).

- ``engine``: ms/step of vita ZeRO-0 / ZeRO-2 vs plain torch vs the HF Trainer (vita.bench.overhead).
- ``tokens``: non-pad token share per sampler and with packing, VITA-like mixture (vita.bench.data).
- ``data``: samples/s of one data worker for 13-tile images, 16-frame video, 30 s audio (vita.bench.data).
- ``generate``: tokens/s of SmolLM2-135M generation on CPU, KV cache on vs off (vita.bench.generate).
- ``serve``: requests/s, latency and time to first token of ``vita.serve`` at 1/4/16 clients, batched vs
  sequential (vita.bench.serve).
- ``import`` (only when named): peak memory / size on disk and time of importing a synthetic 1.5 B-parameter
  VITA folder (vita.bench.interop_import; writes and deletes ~3 GB).
- ``packing_throughput``: training tokens/s packed across the batch vs padded, same samples (vita.bench.packing_speed).
- ``loss_memory``: peak memory and time of the LM loss, plain logits vs chunked (vita.bench.loss_memory).
- ``shard_startup`` (only when named): start-up time to the first batch, JSON mixture vs tar shards, at
  ``--shard-sizes`` samples (default 10,000 and 1,000,000), and shard writing speed (vita.bench.shard_startup).
- ``sp_memory`` (only when named): peak memory per rank of one long sample at sequence_parallel 1 vs 2 (two
  gloo ranks), and the paper estimate of the longest sample per 80 GB GPU at VITA-1.5 sizes (vita.bench.sp_memory).
Figures are measured, never asserted. Set ``OMP_NUM_THREADS`` (the command records it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
SUITES = ("engine", "tokens", "packing_throughput", "data", "loss_memory", "generate", "serve")
OPT_IN = ("import", "shard_startup", "sp_memory")  # run only when named


def machine() -> dict:
    """CPU count, CPU model, torch and transformers versions, threads."""
    import torch
    import transformers

    model = "unknown"
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
            "loadavg_1min": os.getloadavg()[0]}  # other processes on a shared machine skew the timings


def run_suite(name: str, args) -> dict:
    if name == "import":
        from vita.bench.interop_import import run

        return run()
    if name == "engine":
        from vita.bench.overhead import run

        return run(steps=args.steps, warmup=args.warmup, block=args.block, micro_batch=args.micro_batch)
    if name == "loss_memory":
        from vita.bench.loss_memory import run

        return run()
    if name == "packing_throughput":
        from vita.bench.packing_speed import run

        return run()
    if name == "generate":
        from vita.bench.generate import run

        return run()
    if name == "serve":
        from vita.bench.serve import run

        return run()
    if name == "sp_memory":
        from vita.bench.sp_memory import run

        return run()
    if name == "shard_startup":
        from vita.bench.shard_startup import run

        return run(tuple(args.shard_sizes))
    from vita.bench.data import media_throughput, padding_shares

    if name == "tokens":
        return {"shares": padding_shares()}
    runs = []
    for i in range(args.repeats):  # whole runs one after another; each with the load average it met
        load = os.getloadavg()[0]
        print(f"data run {i + 1}/{args.repeats} (load average {load:.1f})", flush=True)
        runs.append({"loadavg_1min": load, **media_throughput(args.seconds)})
    return {"runs": runs}


def data_section(runs: list[dict]) -> list[str]:
    """The data suite's text and table: the range of each figure over the runs, with their load averages."""
    rates = [r["samples_per_s"] for r in runs]
    cpu = [r.get("samples_per_cpu_s", {}) for r in runs]
    loads = [r["loadavg_1min"] for r in runs]
    sizes = runs[0].get("bytes", {})

    def rng(vals: list[float]) -> str:
        return f"{min(vals):.2f}–{max(vals):.2f}" if len(vals) > 1 else f"{vals[0]:.2f}"

    return ["One process (= one data worker), 448-px tiles, from the demo's real media; "
            f"{len(runs)} whole runs one after another, each figure's range over them, at 1-minute load averages "
            f"{rng(loads)} on this shared machine (figures fall several-fold with load). The 16-frame video is "
            "vtest.avi (768×576 msmpeg4, 795 frames, a key frame every 250): 16 frames spread over the clip need "
            "every frame decoded (inter frames), which dominates; decoding is threaded and stops at the last "
            "sampled frame, only sampled frames are converted and resized, all normalised at once (pixels equal "
            "the plain decode's, tests/test_data_media.py).", "",
            "*Stored* rows read the frames a shard holds when written with `python -m vita.data.shard "
            "--video-frames png|npy|jpg` (the same 16 frames, sampled and resized by the training code's "
            "`vita.data.media.video_frames`), as the shard stream reads them: decode the member, normalise. "
            "png and npy equal the decoded frames pixel for pixel (tests/test_data_shards.py); jpg is quality 95, "
            "lossy. Size: one sample's video file, or its stored-frames member. Per CPU s: samples per second of "
            "the worker's own CPU time, what an unloaded core gives (less skewed by the other load than the wall "
            "figure). Goal of issue 22: ≥ 10 stored 16-frame videos/s per worker.", "",
            "| sample | samples/s | samples per CPU s | MB per sample |", "|---|---:|---:|---:|",
            *[f"| {k} | {rng([r[k] for r in rates if k in r])} | {rng([c[k] for c in cpu if k in c]) if cpu[0] else ''} | "
              f"{f'{sizes[k] / 1e6:.2f}' if k in sizes else ''} |" for k in rates[0]], ""]


def render(record: dict, gpu_page: str | None = None, measured: list[str] | None = None) -> str:
    """The whole of BENCHMARKS.md from the stored records, the pages of figures measured by other commands
    (``docs/measured/*.md``: ``make demo`` on fresh clones, the speech benchmarks; each says its command) and the
    device kit's page (``docs/device_summary.md``)."""
    from vita.bench.overhead import table

    out = ["# Benchmarks", "",
           "Written by `python -m vita.bench` (do not edit by hand; figures come from `docs/benchmarks.json`).",
           "Timings are measured on shared machines: compare the ratios within one run, not absolute times.", ""]
    for name in (*SUITES, *OPT_IN):
        r = record.get(name)
        if r is None:
            continue
        m = r["machine"]
        out += [f"## {TITLES[name]}", "", f"Measured {r['date']} with `{r['command']}`  ",
                f"on {m['nproc']} × {m['cpu']}, torch {m['torch']}, transformers {m['transformers']}, "
                f"{m['torch_threads']} torch thread(s) (OMP_NUM_THREADS={m['OMP_NUM_THREADS']}), "
                f"load average {m.get('loadavg_1min', float('nan')):.1f} when the suite ended.", ""]
        res = r["result"]
        if name == "engine":
            s = res["setup"]
            out += [f"Model: Qwen2-shaped, {s['params'] / 1e6:.1f} M parameters ({s['shape']}, vocab 1024), fp32, "
                    f"micro-batch {s['micro_batch']} of the demo data ({s['tokens_per_step']:.0f} tokens/step, "
                    f"{s['flops_per_step'] / 1e9:.1f} model GFLOP/step by vita.engine.flops); {s['steps']} timed "
                    f"steps per arm after {s['warmup']} warm-up, in alternating blocks of {s['block']}.", "",
                    *table(res), "",
                    "All arms start from the same weights and see the same batches (equal last losses = equal "
                    "work). The HF Trainer runs **without DeepSpeed** (CPU; its DeepSpeed path is not run here) "
                    "and, since the process holds a world-1 process group, under accelerate's DDP wrapper. "
                    "vita runs DeepSpeed on CPU (gloo, torch AdamW), with `engine.fused_loss=off` so that every "
                    "arm computes the same loss. Targets: issue 7 vita ≤ 1.10 × plain torch, issue 14 ZeRO-0 ≤ "
                    "1.05 ×. The ratio is of the medians over all timed steps; its spread (p25–p75) is over the "
                    "per-block ratios, each block's arms having run next to each other in time. With a load "
                    "average near or above the core count (other jobs on a shared machine) single ratios move by "
                    "tens of percent; the block spread shows how far.", "",
                    "Where the overhead went (cProfile of `train_step`, micro-batch 1): at world 1 under ZeRO-0, "
                    "DeepSpeed's gradient all-reduce is an identity that still flattened every gradient into a bucket "
                    "and copied it back, about a fifth of a step; vita skips it there (weights bitwise equal, "
                    "tests/test_engine_world1.py). ZeRO-2 at world 1 keeps DeepSpeed's own partition bookkeeping: "
                    "gradients copied into reduce buckets and the fp32 partition (`reduce_ipg_grads`, `copy_`), a "
                    "gradient norm built tensor by tensor (`get_grad_norm_direct`), and the updated partition copied "
                    "back to the parameters; those live inside DeepSpeed's ZeRO optimizer and are not cut here.", ""]
        elif name == "tokens":
            out += ["VITA-like mixture: images 1–13 tiles × 256, video 4–16 frames × 256, audio 2–30 s at "
                    "12.5 tokens/s, text 50–2,000 tokens; max_length 6,200; 8 ranks × micro-batch 4; 20,000 samples.",
                    "", "| sampler | non-pad token share |", "|---|---:|",
                    *[f"| {k} | {v:.3f} |" for k, v in res["shares"].items()], "",
                    "Packing fills rows of `max_length` across the whole token budget (first-fit-decreasing over "
                    "windows of `data.pack_window` samples, `token_budget // max_length` rows per micro-batch; "
                    "the share counts each micro-batch as rows x its longest row). Before issue 14 it reached "
                    "only 0.952, below token_budget without packing: the packer saw one micro-batch at a time, "
                    "and the token_budget sampler had cut those from samples sorted by length, so each held "
                    "samples of nearly one length. Such samples cannot complement each other in a row (two of "
                    "3,500 tokens never share a 6,200-token row), so rows held one sample, or k of them, with "
                    "the same gap each, and the last row of every micro-batch was only partly full but padded to "
                    "the longest row: about half a row of padding per 4-5 rows. Mixing lengths (a shuffled "
                    "window) and packing the whole window first removes both.", ""]
        elif name == "generate":
            from vita.bench.generate import table as gen_table

            s = res["setup"]
            out += [f"SmolLM2-135M-Instruct (real weights, fp32) through `vita.infer.generate`, greedy, a "
                    f"{s['prompt_tokens']}-token chat prompt, exactly {s['new_tokens']} new tokens per row (no stop), "
                    f"median of {s['repeats']} alternating repeats; tokens/s = new tokens / wall time (prefill "
                    "included).", "", *gen_table(res), ""]
        elif name == "serve":
            from vita.bench.serve import section

            out += section(res)
        elif name == "import":
            from vita.bench.interop_import import table as import_table

            out += ["`vita.interop.load_vita(folder, dtype=\"auto\")` in a fresh process on a synthetic VITA-1.5-layout "
                    "folder (Qwen2.5-1.5B-shaped LLM + tiny vision/audio parts, bfloat16, 1 GiB shards + index). "
                    "Parameters are built on the meta device and each tensor is read into its own buffer and "
                    "handed to the model, so the process holds one copy. Peak RSS is the process's `ru_maxrss` "
                    "(Python, torch and transformers included); goal of issue 13: peak / disk ≤ 1.3.", "",
                    *import_table(res), ""]
        elif name == "shard_startup":
            from vita.bench.shard_startup import table as shard_table

            out += ["A synthetic text mixture (two JSONL files of short conversations, the tiny Qwen2's tokenizer, "
                    f"template qwen2.5), {res['samples_per_shard']:,} samples per shard; per size, each arm in a fresh "
                    "process, `build_data` to the first micro-batch timed (imports not; vita/bench/shard_startup.py). "
                    "JSON cold: empty index cache, every record read and tokenised; JSON cached: `data.index_cache` "
                    "hit (the files' line offsets are still read); shards: `format: shards`, which reads the "
                    "manifest and then the first shuffle buffer (1,000 samples) of one shard. Shard writing: the "
                    "writer's tar output after its index pass (each record read again, its media copied, tar "
                    "members of 512-byte blocks); JSON cold at 1M ran on a loaded machine (see the load average).",
                    "",
                    *shard_table(res), ""]
        elif name == "packing_throughput":
            from vita.bench.packing_speed import table as packing_table

            s = res["setup"]
            out += [f"{s['samples']} synthetic samples with the VITA-like length mixture scaled down 20× (max_length "
                    f"{s['max_length']}), a Qwen2-shaped model (hidden 256, 4 layers, vocab 1024, fp32, sdpa), "
                    f"forward + backward of {s['micro_batches']} micro-batches per arm, arms alternating in blocks "
                    f"of {s['block']} (vita/bench/packing_speed.py). Goal of issue 14: packed ≥ 1.3× unpacked.", "",
                    *packing_table(res), "",
                    "On CPU a packed row runs dense attention over its whole length under a block-diagonal mask "
                    "(the masked-out part is computed too) and long rows cost more attention per token than the "
                    "short rows that token_budget groups; flash-attn's varlen path on a GPU skips both.", ""]
        elif name == "loss_memory":
            from vita.bench.loss_memory import table as loss_table

            out += ["Head + cross-entropy, forward and backward once, each in a fresh subprocess; peak RSS added "
                    "by the loss (`ru_maxrss` after minus before; logits, softmax and gradients, the head weight's "
                    f"gradient included), vocab {res['vocab']:,}, fp32 (vita/bench/loss_memory.py). "
                    "`engine.fused_loss=auto` uses the chunked loss on CPU (liger-kernel's on a GPU when installed). "
                    "Goal of issue 14: chunked ≤ 10% of the plain loss's memory, time ≤ 1.1×.", "",
                    *loss_table(res), ""]
        elif "runs" in res:
            out += data_section(res["runs"])
        elif name == "sp_memory":
            from vita.bench.sp_memory import table as sp_table

            out += ["One unpadded text sample through `OmniModel` (tiny-qwen2: 2 layers, hidden 64, 4 heads, vocab "
                    "1,024; fp32, sdpa, chunked loss), forward + backward once per process; peak RSS added "
                    "(`ru_maxrss` after minus before) on the larger rank; SP 2 on two gloo ranks (torchrun), "
                    "each holding half the sequence (vita/bench/sp_memory.py). The longest sample within the "
                    "budget is extrapolated linearly from the two lengths. RSS high-water marks move by a few MB "
                    "between runs; on a loaded machine rerun and compare.", "", *sp_table(res), ""]
        else:
            out += ["One process (= one data worker), 448-px tiles, from the demo's real media. The 16-frame "
                    "video is vtest.avi (768×576 msmpeg4, 795 frames, a key frame every 250): 16 frames spread "
                    "over the clip need every frame decoded (inter frames), which dominates; decoding is threaded "
                    "and stops at the last sampled frame, only sampled frames are converted and resized, all "
                    "normalised at once (pixels equal the plain decode's, tests/test_data_media.py). In an "
                    "interleaved A/B against the previous decode on the same (loaded) machine, 2026-12-03: "
                    "video 1.04×, 13-tile images 1.42×. Figures fall several-fold on a loaded machine: read "
                    "them with the load average above (the previous run, at load 3.1, gave 10.85 images/s and "
                    "0.90 videos/s).", "",
                    "| sample | samples/s |", "|---|---:|",
                    *[f"| {k} | {v:.2f} |" for k, v in res["samples_per_s"].items()], ""]
    out += ["## FLOPs and MFU", "",
            "Training logs carry `flops_per_step`, `tflops` (achieved model TFLOP/s per device) and, with "
            "`engine.peak_tflops` set, `mfu`. The formula (6·N·t + 12·L·d·s² per sequence for trained parts, "
            "less for frozen ones, vision and audio encoders included) is documented in `vita/engine/flops.py` "
            "and checked against `torch.utils.flop_counter.FlopCounterMode` in `tests/test_flops.py` (within 5%).",
            ""]
    out += [page.strip() + "\n" for page in measured or []]
    out += ["## GPU (one device)", "",
            "`launch/gpu_bench.sh` measures tokens/s and MFU for a Qwen2.5-0.5B-shaped LLM + InternViT-300M-shaped "
            "tower (random init, bf16, ZeRO-2), packing off vs on, and prints one table (`vita/bench/gpu.py`; "
            "`SMOKE=1` checks the script's path on CPU). On a lent GPU machine the device kit runs it after the "
            "GPU checks, in one call (`docs/DEVICE.md`); its summary page, saved as `docs/device_summary.md`, "
            "is rendered here.", ""]
    out += [gpu_page.strip(), ""] if gpu_page else [
        "**No GPU has been lent to this project yet: no figures here.**", ""]
    return "\n".join(out)


TITLES = {"engine": "Engine overhead (step time, world 1)", "tokens": "Token efficiency (non-pad share)",
          "data": "Data throughput per worker", "generate": "Generation speed (CPU, SmolLM2-135M)",
          "serve": "Serving: vita.serve throughput and latency (CPU, SmolLM2-135M)",
          "import": "VITA checkpoint import (peak memory, time)",
          "packing_throughput": "Packing: training tokens/s",
          "shard_startup": "Data start-up: JSON mixture vs shards", "loss_memory": "LM loss memory (plain vs chunked)",
          "sp_memory": "Sequence parallelism: memory per rank of one long sample"}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suites", nargs="*", choices=[*SUITES, *OPT_IN, []],
                    help=f"suites to run (default: {', '.join(SUITES)}; {', '.join(OPT_IN)} only when named)")
    ap.add_argument("--steps", type=int, default=200, help="engine: timed steps per arm")
    ap.add_argument("--warmup", type=int, default=5, help="engine: untimed steps per arm first")
    ap.add_argument("--block", type=int, default=5, help="engine: steps per alternating block")
    ap.add_argument("--micro-batch", type=int, default=4, help="engine: samples per step")
    ap.add_argument("--seconds", type=float, default=3.0, help="data: seconds per media measurement")
    ap.add_argument("--repeats", type=int, default=3, help="data: whole runs (the doc gives their range)")
    ap.add_argument("--shard-sizes", type=int, nargs="+", default=[10_000, 1_000_000],
                    help="shard_startup: mixture sizes (samples)")
    ap.add_argument("--docs", type=Path, default=DOCS, help="folder of BENCHMARKS.md and benchmarks.json")
    ap.add_argument("--render", action="store_true", help="only rewrite BENCHMARKS.md from benchmarks.json")
    args = ap.parse_args(argv)
    suites = [] if args.render else (args.suites or list(SUITES))
    store = args.docs / "benchmarks.json"
    record = json.loads(store.read_text()) if store.is_file() else {}
    argv_str = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    command = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python -m vita.bench {argv_str}".strip()
    for name in suites:
        print(f"== {name}", flush=True)
        result = run_suite(name, args)
        record[name] = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                        "command": command, "machine": machine(), "result": result}
    args.docs.mkdir(parents=True, exist_ok=True)
    store.write_text(json.dumps(record, indent=2) + "\n")
    gpu = args.docs / "device_summary.md"
    pages = [f.read_text() for f in sorted((args.docs / "measured").glob("*.md"))]
    text = render(record, gpu.read_text() if gpu.is_file() else None, pages)
    (args.docs / "BENCHMARKS.md").write_text(text)
    print(text)
    return record


if __name__ == "__main__":
    main()
