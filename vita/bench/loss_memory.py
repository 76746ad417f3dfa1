"""Peak memory and time of the LM loss (head + cross-entropy, forward + backward), plain vs chunked.

Each measurement runs in a fresh subprocess: it allocates the hidden states ``[tokens, hidden]``,
the head weight ``[vocab, hidden]`` and the targets (10% ignored), reads its peak RSS (``ru_maxrss``),
runs the loss forward and backward once, and reads the peak again; the difference is the memory the
loss added (logits, softmax, gradients, the weight's gradient included, which both modes make).
Memory: Qwen2.5's vocab (151,936) x 8,192 tokens, fp32, hidden 128 (the logits dominate; a wider
hidden only adds the same weight gradient to both). Time: 1,024 tokens at the 0.5B's hidden 896,
where the head matmuls dominate.

The plain loss at 8,192 tokens needs ~4 copies of 4.98 GB; where the machine has less free memory
than that (``MemAvailable`` with a margin), it is measured at fewer tokens and its figure at the
requested count is extrapolated linearly from two measured counts (its memory is linear in tokens:
the two points are reported, so the fit can be checked). Time is compared at the largest token
count both modes ran. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

MB = 1 << 20


def _child(mode: str, tokens: int, hidden: int, vocab: int) -> dict:
    import torch

    from vita.model.loss import chunked_linear_cross_entropy

    torch.manual_seed(0)
    h = torch.randn(tokens, hidden, requires_grad=True)
    w = torch.randn(vocab, hidden).mul_(0.02).requires_grad_()  # in place: no freed temporary in the peak
    t = torch.randint(0, vocab, (tokens,))
    t[::10] = -100
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    if mode == "off":
        loss = torch.nn.functional.cross_entropy(torch.nn.functional.linear(h, w).float(), t, reduction="sum")
    else:
        loss = chunked_linear_cross_entropy(h, w, None, t)
    loss.backward()
    sec = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"mode": mode, "tokens": tokens, "added_mb": (peak - before) / MB, "seconds": sec,
            "loss": float(loss.detach())}


def _available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def measure(mode: str, tokens: int, hidden: int, vocab: int) -> dict:
    """One subprocess run of the loss; returns added MB, seconds and the loss."""
    out = subprocess.run([sys.executable, "-m", "vita.bench.loss_memory", "--child", mode, "--tokens", str(tokens),
                          "--hidden", str(hidden), "--vocab", str(vocab)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(tokens: int = 8192, hidden: int = 128, vocab: int = 151936, time_tokens: int = 1024,
        time_hidden: int = 896, margin: float = 1.25) -> dict:
    """Plain vs chunked loss: memory at ``tokens`` x ``vocab`` (hidden ``hidden``; plain extrapolated
    if it cannot fit), time at ``time_tokens`` x ``vocab`` with the 0.5B's hidden size."""
    logits_mb = tokens * vocab * 4 / MB
    chunked = measure("chunked", tokens, hidden, vocab)
    plain_runs = []
    if _available_mb() > 4 * logits_mb * margin:
        plain_runs.append(measure("off", tokens, hidden, vocab))
        plain_mb, extrapolated = plain_runs[0]["added_mb"], False
    else:
        small = max(256, tokens // 8)
        for n in (small, 2 * small):
            plain_runs.append(measure("off", n, hidden, vocab))
        a, b = plain_runs
        slope = (b["added_mb"] - a["added_mb"]) / (b["tokens"] - a["tokens"])
        plain_mb, extrapolated = b["added_mb"] + slope * (tokens - b["tokens"]), True
    tp, tc = measure("off", time_tokens, time_hidden, vocab), measure("chunked", time_tokens, time_hidden, vocab)
    return {"tokens": tokens, "hidden": hidden, "vocab": vocab, "dtype": "fp32",
            "logits_mb": logits_mb, "plain_added_mb": plain_mb, "plain_extrapolated": extrapolated,
            "chunked_added_mb": chunked["added_mb"], "memory_ratio": chunked["added_mb"] / plain_mb,
            "time_tokens": time_tokens, "time_hidden": time_hidden, "plain_s": tp["seconds"],
            "chunked_s": tc["seconds"], "time_ratio": tc["seconds"] / tp["seconds"],
            "loss_rel_diff": abs(tc["loss"] - tp["loss"]) / abs(tp["loss"]),
            "runs": {"plain": plain_runs, "chunked": [chunked], "time": [tp, tc]}}


def table(r: dict) -> list[str]:
    """Markdown lines for a :func:`run` result."""
    ext = " (extrapolated)" if r["plain_extrapolated"] else ""
    pts = ", ".join(f"{p['tokens']} tokens: {p['added_mb']:.0f} MB" for p in r["runs"]["plain"])
    return [f"| loss | peak MB added ({r['tokens']} tokens, hidden {r['hidden']}) | × plain | "
            f"s fwd+bwd ({r['time_tokens']} tokens, hidden {r['time_hidden']}) | × plain |",
            "|---|---:|---:|---:|---:|",
            f"| plain logits | {r['plain_added_mb']:.0f}{ext} | 1.000 | {r['plain_s']:.2f} | 1.000 |",
            f"| chunked | {r['chunked_added_mb']:.0f} | {r['memory_ratio']:.3f} | {r['chunked_s']:.2f} | "
            f"{r['time_ratio']:.3f} |", "",
            f"Plain runs measured: {pts}. One fp32 copy of the logits is {r['logits_mb']:.0f} MB. "
            f"Chunked vs plain loss value: relative difference {r['loss_rel_diff']:.1e}."]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=["off", "chunked"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=151936)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(_child(a.child, a.tokens, a.hidden, a.vocab)))
        return
    r = run(a.tokens, a.hidden, a.vocab)
    print("\n".join(table(r)))


if __name__ == "__main__":
    main()
