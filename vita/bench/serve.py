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


def run(max_tokens: int = 16, per_client: dict | None = None, rounds: int = 2) -> dict:
    """Both servers up at once; ``rounds`` times: the batched one at 1, 4, 16 clients, the sequential one at 16.
    Returns ``{"setup", "batched": [rows], "sequential": [rows], "ratio_at_16": [per round]}`` (a row per
    level and round)."""
    per_client = per_client or {1: 8, 4: 4, 16: 2}
    out: dict = {"setup": {"max_tokens": max_tokens, "per_client": per_client, "questions": len(QUESTIONS),
                           "rounds": rounds}, "batched": [], "sequential": [], "ratio_at_16": []}
    arms = {"batched": ([], (1, 4, 16)), "sequential": (["--max-batch", "1"], (16,))}
    servers = {arm: start(extra) for arm, (extra, _) in arms.items()}
    try:
        for arm in arms:
            ask(servers[arm][1], QUESTIONS[0], max_tokens)  # warm-up
        for _ in range(rounds):
            for arm, (_, levels) in arms.items():
                out[arm] += [load(servers[arm][1], c, per_client[c], max_tokens) for c in levels]
            out["ratio_at_16"].append(out["batched"][-1]["requests_per_s"] / out["sequential"][-1]["requests_per_s"])
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=60)
    return out


def table(res: dict) -> list[str]:
    """Per arm and concurrency: the median over rounds (min-max in brackets when several)."""
    def cell(rows: list[dict], key: str) -> str:
        v = sorted(r[key] for r in rows)
        mid = statistics.median(v)
        return f"{mid:.2f}" if len(v) == 1 else f"{mid:.2f} ({v[0]:.2f}-{v[-1]:.2f})"

    rows = ["| server | clients | requests/s | p50 latency (s) | p99 latency (s) | TTFT p50 (s) | TTFT p99 (s) |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for arm in ("batched", "sequential"):
        for c in sorted({r["clients"] for r in res[arm]}):
            at = [r for r in res[arm] if r["clients"] == c]
            rows.append(f"| {arm} | {c} | " + " | ".join(cell(at, k) for k in
                        ("requests_per_s", "p50_s", "p99_s", "ttft_p50_s", "ttft_p99_s")) + " |")
    ratios = sorted(res["ratio_at_16"])
    rows += ["", f"Batched / sequential throughput at 16 clients: **{statistics.median(ratios):.2f}×** "
             f"(rounds: {', '.join(f'{r:.2f}' for r in res['ratio_at_16'])}; goal of issue 21: ≥ 2×)."]
    return rows


def section(res: dict) -> list[str]:
    """The BENCHMARKS.md section body."""
    s = res["setup"]
    return [f"SmolLM2-135M-Instruct (real weights, fp32) behind `python -m vita.serve` (`model=smol_lm "
            f"data.template=smollm2`), greedy, streamed, `max_tokens` {s['max_tokens']}, {s['questions']} short chat "
            f"questions in turn; each client sends {', '.join(f'{v} (at {k})' for k, v in s['per_client'].items())} "
            f"requests one after another, {s.get('rounds', 1)} rounds with both servers up (vita/bench/serve.py); "
            "each figure is the median over the rounds (min-max in brackets). Latency: request to last chunk; TTFT: "
            "request to the first text chunk. *batched*: the default server (up to 16 requests per forward pass, 50 ms window); "
            "*sequential*: `--max-batch 1`. With few requests per level, p99 is close to the slowest request.", "",
            *table(res), ""]


if __name__ == "__main__":
    print("\n".join(table(run())))
