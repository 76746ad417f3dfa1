"""Start-up time to the first batch, JSON mixture vs tar shards, as the dataset grows.

A synthetic text mixture of ``n`` small samples (two JSONL files, a few dozen tokens each, the
tiny Qwen2's chatterbot tokenizer, template qwen2.5) at each size. Per size, each in a fresh
process (imports not timed; ``build_data`` to the first micro-batch timed):

- ``json, cold``: the JSON path with an empty index cache (``index`` reads and tokenises every record);
- ``json, cached``: the same with the index cache it just wrote (``data.index_cache``; the annotation
  files' line offsets are still read);
- ``shards``: ``format: shards`` on the shards written from it (reads the manifest only).

Also measured: writing the shards (``python -m vita.data.shard``'s writer, after its index; samples/s
and MB/s). Nothing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = r"""
import json, sys, time
from vita.bench.harness import compose
from vita.data import build_data
from vita.data.loader import Position
from vita.model.tokens import load_tokenizer
cfg = compose(json.loads(sys.argv[1]))
tok = load_tokenizer(cfg.model)
t0 = time.perf_counter()
data = build_data(cfg, tok, 0, 1)
pos, mbs = next(data.loader.iterate(Position()))
t1 = time.perf_counter()
print(json.dumps({"startup_s": t1 - t0, "first_ids": mbs[0]["ids"][:2]}))
"""


def synthetic_mixture(root: Path, n: int) -> list[str]:
    """``n`` short conversations in two JSONL files; returns the ``data.datasets`` override."""
    root.mkdir(parents=True, exist_ok=True)
    words = "the a model learns to answer short questions about images audio and video clips well".split()
    files = []
    for f in range(2):
        path = root / f"synth{f}.jsonl"
        with path.open("w") as out:
            for i in range(f, n, 2):
                q = " ".join(words[(i + k) % len(words)] for k in range(6))
                a = " ".join(words[(i * 7 + k) % len(words)] for k in range(8))
                out.write(json.dumps({"id": f"s{i}", "conversations": [{"from": "human", "value": q + "?"},
                                                                        {"from": "gpt", "value": a + "."}]}) + "\n")
        files.append(str(path))
    return [f"data.datasets=[{{name:synth,annotations:[{','.join(files)}]}}]"]


def _base(datasets: list[str]) -> list[str]:
    return ["experiment=chatterbot_tiny", "data=demo", "data.sampler=random", "engine.micro_batch_size=8",
            *datasets]


def _child(overrides: list[str], env: dict) -> dict:
    p = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(overrides)], env=env, capture_output=True,
                       text=True, timeout=7200)
    if p.returncode != 0:
        raise RuntimeError(f"start-up child failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def run(sizes: tuple[int, ...] = (10_000, 1_000_000), samples_per_shard: int = 10_000) -> dict:
    from vita.bench.harness import compose
    from vita.data.shards.writer import write_shards

    rows = []
    with tempfile.TemporaryDirectory(prefix="vita-shard-bench-") as tmp:
        for n in sizes:
            root = Path(tmp) / f"n{n}"
            datasets = synthetic_mixture(root / "json", n)
            env = {**os.environ, "VITA_INDEX_CACHE": str(root / "index-cache"), "TOKENIZERS_PARALLELISM": "false"}
            cold = _child(_base(datasets), env)
            warm = _child(_base(datasets), env)
            os.environ["VITA_INDEX_CACHE"] = env["VITA_INDEX_CACHE"]  # the writer indexes from that cache
            t0 = time.perf_counter()
            man = write_shards(compose(_base(datasets)), root / "shards", samples_per_shard=samples_per_shard,
                               args=_base(datasets), progress=False)
            total = time.perf_counter() - t0
            shards = _child([*_base(datasets), "data.format=shards",
                             f"data.shards=[{{name:synth,url:'{root / 'shards'}'}}]"], env)
            w = man["timing"]
            rows.append({"samples": n, "shards": len(man["shards"]), "json_cold_s": cold["startup_s"],
                         "json_cached_s": warm["startup_s"], "shards_s": shards["startup_s"],
                         "write_s": w["write_s"], "write_samples_per_s": w["samples_written"] / max(w["write_s"], 1e-9),
                         "write_mb_per_s": w["written_bytes"] / 1e6 / max(w["write_s"], 1e-9),
                         "shard_total_s": total, "bytes": man["bytes"],
                         "manifest_bytes": (root / "shards" / "manifest.json").stat().st_size})
            print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows, "samples_per_shard": samples_per_shard}


def table(res: dict) -> list[str]:
    out = ["| samples | shards | manifest | JSON, cold index | JSON, cached index | shards | shard writing |",
           "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        out.append(f"| {r['samples']:,} | {r['shards']} | {r['manifest_bytes'] / 1e3:.0f} kB | {r['json_cold_s']:.2f} s "
                   f"| {r['json_cached_s']:.2f} s | {r['shards_s']:.2f} s | {r['write_samples_per_s']:,.0f} "
                   f"samples/s, {r['write_mb_per_s']:.1f} MB/s |")
    return out


if __name__ == "__main__":
    sizes = tuple(int(x) for x in sys.argv[1:]) or (10_000, 1_000_000)
    print(json.dumps(run(sizes), indent=1))
