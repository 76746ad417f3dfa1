"""``python -m vita.check`` on a ``format: shards`` config: the manifests, not every sample again.

For each shard set: the manifest is read and compared with this config's spec fingerprint (a stale
one is a problem, with the re-shard command), each local shard's size is checked against the
manifest, and the bad samples left out at sharding (``bad_samples.jsonl``) are reported by kind with
the first examples, as for a JSON mixture; with ``sampler: token_budget``, a shard whose longest sample
exceeds the budget is a problem. Exit status as ``vita.check``: problems -> 1.
"""

from __future__ import annotations

import json
import os
from collections import Counter

from vita.data.shards import format as fmt
from vita.data.shards.reader import ShardError, is_url, join, open_stream
from vita.errors import DataError


def _bad_rows(st, timeout: float) -> list[dict]:
    try:
        with open_stream(join(st.base, fmt.BAD_SAMPLES), timeout) as f:
            return [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
    except ShardError:
        return []


def check_shards(cfg, tokenizer, spec, out, examples: int = 3) -> int:
    """Print the report of ``cfg.data.shards`` to ``out``; returns the number of problems."""
    from vita.data import make_processor
    from vita.data.shards.plan import check_fresh, open_set

    d = cfg.data
    proc = make_processor(d, tokenizer, spec)
    problems = 0
    for s in d.shards:
        try:
            st = open_set(s.name, s.url, s.ratio, d.shard_timeout)
        except DataError as e:
            print(f"\n== {s.name}: {e}", file=out)
            problems += 1
            continue
        m = st.manifest
        n = sum(sh["samples"] for sh in st.shards)
        mods = Counter()
        for sh in st.shards:
            mods.update(sh.get("modalities", {}))
        print(f"\n== {s.name}: {st.manifest_url}: {len(st.shards)} shard(s), {n} samples, "
              f"{sum(sh['tokens'] for sh in st.shards)} tokens, written by vita {m.get('vita_version')}", file=out)
        frames = m.get("video_frames", "off")
        print("  modality mix: " + ", ".join(f"{k} {v}" for k, v in mods.most_common())
              + (f"; videos stored as sampled frames ({frames}), read without decoding" if frames != "off" else ""),
              file=out)
        try:
            check_fresh([st], d, proc)
            print("  spec: matches this config", file=out)
        except DataError as e:
            print(f"  problem 'stale manifest': {e}", file=out)
            problems += 1
        if not is_url(st.base):
            for sh in st.shards:
                path = join(st.base, sh["name"])
                size = os.path.getsize(path) if os.path.isfile(path) else None
                if size != sh["bytes"]:
                    what = "missing" if size is None else f"{size} bytes, the manifest says {sh['bytes']}"
                    print(f"  problem 'damaged shard': {path}: {what}; re-shard or restore it", file=out)
                    problems += 1
        if d.sampler == "token_budget" and d.token_budget > 0:
            limit = (d.max_length or d.token_budget) if d.packing else d.token_budget
            for sh in [sh for sh in st.shards if sh.get("longest", 0) > limit]:
                print(f"  problem 'over token budget': {join(st.base, sh['name'])} holds a sample of {sh['longest']} "
                      f"tokens > {limit} (data.{'max_length' if d.packing else 'token_budget'}); raise "
                      "data.token_budget or re-shard with a lower data.max_length", file=out)
                problems += 1
        bad = _bad_rows(st, d.shard_timeout)
        kinds = Counter(r["kind"] for r in bad)
        if bad:
            print(f"  left out at sharding: {len(bad)} sample(s) ({fmt.BAD_SAMPLES})", file=out)
        for kind, count in kinds.most_common():
            print(f"  problem {kind!r}: {count}", file=out)
            for r in [r for r in bad if r["kind"] == kind][:examples]:
                print(f"    {r['message']}", file=out)
        problems += len(bad)
    print(f"\n{'FAIL' if problems else 'OK'}: {len(d.shards)} shard set(s), {problems} problem(s)", file=out)
    return problems
