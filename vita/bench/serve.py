"""Serving throughput on CPU: SmolLM2-135M-Instruct behind ``python -m vita.serve``, 1 / 4 / 16 clients.

Each client sends its requests one after another (streamed, greedy, ``max_tokens`` fixed, the same
questions in every arm); latency is the time to the last chunk, time to first token (TTFT) the time
to the first text chunk. The same load runs against a second server with ``--max-batch 1``
(sequential: one request per forward pass) for the batched/sequential throughput ratio. Servers are
subprocesses; clients are threads of this process (stdlib HTTP only).

    python -m vita.bench serve          # or: python -m vita.bench.serve
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from urllib.parse import urlparse

from vita.bench.generate import PROMPT

MODEL = ["experiment=chatterbot_tiny", "model=smol_lm", "data.template=smollm2"]
QUESTIONS = [PROMPT, "What is the capital of France?", "Name three colours of the rainbow.", "Who wrote Hamlet?",
             "Explain photosynthesis in one sentence.", "What do bees make?", "Give me a tip for sleeping well.",
             "Why is the sky blue?"]


def start(extra: list[str]) -> tuple[subprocess.Popen, str]:
    """A ``vita.serve`` subprocess on a free port and its URL (once it printed ``ready on``)."""
    proc = subprocess.Popen([sys.executable, "-m", "vita.serve", *MODEL, "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if "ready on " in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining its output
            return proc, line.split("ready on ", 1)[1].split()[0]
    raise RuntimeError(f"vita.serve did not start (rc {proc.wait()})")


def ask(url: str, question: str, max_tokens: int) -> tuple[float, float, int]:
    """One streamed request: (seconds to the first text chunk, seconds to the end, chunks of text)."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = json.dumps({"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
                       "stream": True})
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    first, n = None, 0
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        delta = json.loads(line[6:])["choices"][0]["delta"] if '"choices": [{' in line else {}
        if delta.get("content"):
            n += 1
            first = first if first is not None else time.perf_counter() - t0
    total = time.perf_counter() - t0
    conn.close()
    return (first if first is not None else total), total, n


def load(url: str, clients: int, per_client: int, max_tokens: int) -> dict:
    """``clients`` threads x ``per_client`` requests; requests/s over the wall time, latency and TTFT percentiles."""
    results: list[tuple[float, float, int]] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        for k in range(per_client):
            got = ask(url, QUESTIONS[(i + k) % len(QUESTIONS)], max_tokens)
            with lock:
                results.append(got)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(r[1] for r in results)
    ttft = sorted(r[0] for r in results)

    def pct(xs: list[float], p: float) -> float:
        return xs[min(len(xs) - 1, round(p * (len(xs) - 1)))]

    return {"clients": clients, "requests": len(results), "wall_s": wall, "requests_per_s": len(results) / wall,
            "p50_s": statistics.median(lat), "p99_s": pct(lat, 0.99), "ttft_p50_s": statistics.median(ttft),
            "ttft_p99_s": pct(ttft, 0.99)}


def run(max_tokens: int = 16, per_client: dict | None = None) -> dict:
    """``{"setup", "batched": [row per concurrency], "sequential": [row at 16], "ratio_at_16"}``."""
    per_client = per_client or {1: 8, 4: 4, 16: 2}
    out: dict = {"setup": {"max_tokens": max_tokens, "per_client": per_client, "questions": len(QUESTIONS)}}
    for arm, extra, levels in (("batched", [], (1, 4, 16)), ("sequential", ["--max-batch", "1"], (16,))):
        proc, url = start(extra)
        try:
            ask(url, QUESTIONS[0], max_tokens)  # warm-up
            out[arm] = [load(url, c, per_client[c], max_tokens) for c in levels]
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    out["ratio_at_16"] = out["batched"][-1]["requests_per_s"] / out["sequential"][-1]["requests_per_s"]
    return out


def table(res: dict) -> list[str]:
    rows = ["| server | clients | requests | requests/s | p50 latency (s) | p99 latency (s) | TTFT p50 (s) | "
            "TTFT p99 (s) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for arm in ("batched", "sequential"):
        for r in res[arm]:
            rows.append(f"| {arm} | {r['clients']} | {r['requests']} | {r['requests_per_s']:.2f} | {r['p50_s']:.2f} | "
                        f"{r['p99_s']:.2f} | {r['ttft_p50_s']:.2f} | {r['ttft_p99_s']:.2f} |")
    rows += ["", f"Batched / sequential throughput at 16 clients: **{res['ratio_at_16']:.2f}×** (goal of issue 21: ≥ 2×)."]
    return rows


def section(res: dict) -> list[str]:
    """The BENCHMARKS.md section body."""
    s = res["setup"]
    return [f"SmolLM2-135M-Instruct (real weights, fp32) behind `python -m vita.serve` (`model=smol_lm "
            f"data.template=smollm2`), greedy, streamed, `max_tokens` {s['max_tokens']}, {s['questions']} short chat "
            f"questions in turn; each client sends {', '.join(f'{v} (at {k})' for k, v in s['per_client'].items())} "
            "requests one after another (vita/bench/serve.py). Latency: request to last chunk; TTFT: request to the "
            "first text chunk. *batched*: the default server (up to 16 requests per forward pass, 50 ms window); "
            "*sequential*: `--max-batch 1`. With few requests per level, p99 is close to the slowest request.", "",
            *table(res), ""]


if __name__ == "__main__":
    print("\n".join(table(run())))
