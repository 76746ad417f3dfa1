"""``python -m vita.check data=<name> [overrides]``: a data preflight before any GPU is spent.

One pass over every sample of the configured data, in worker processes with a progress bar:
validates the record, decodes every media file, expands the markers and checks the token
length against ``data.max_length``. Prints a table per dataset (samples, modality mix, token
length percentiles, problems by kind with the first examples) and exits 1 if it found problems.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections import Counter, defaultdict

import numpy as np

_STATE: dict = {}


def _init(source, proc) -> None:
    _STATE["source"], _STATE["proc"] = source, proc


def check_one(i: int) -> tuple[str, str | None, int, str, str]:
    """(dataset, problem kind or None, token length, modality mix, message) of record ``i``."""
    from vita.data.schema import BadSample

    source, proc = _STATE["source"], _STATE["proc"]
    name = source.dataset_of(i)
    try:
        raw, where, roots, name = source.read(i)
        proc.measure(raw, where, roots)  # header-based lengths (what the samplers use)
        item = proc.load(raw, where, roots)  # and a full decode
    except BadSample as e:
        return name, e.kind, 0, "", str(e)
    mods = [m for m in ("image", "video", "audio") if raw.get(m)]
    return name, None, len(item["input_ids"]), "+".join(mods) or "text", ""


def run_check(cfg, workers: int | None = None, examples: int = 3, out=sys.stdout) -> int:
    """Check ``cfg.data``; print the report to ``out``; return the number of problems."""
    from tqdm.auto import tqdm

    from vita.data import make_processor, open_source, resolve_spec
    from vita.model.tokens import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)  # model.tokenizer, else model.pretrained (with its GGUF file)
    spec = resolve_spec(cfg.data, tokenizer, None)
    source = open_source(cfg.data)
    proc = make_processor(cfg.data, tokenizer, spec)
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    n = len(source)
    if workers > 1:
        ctx = mp.get_context("fork")
        with ctx.Pool(workers, initializer=_init, initargs=(source, proc)) as pool:
            results = list(tqdm(pool.imap(check_one, range(n), chunksize=8), total=n, desc="checking", unit="sample"))
    else:
        _init(source, proc)
        results = [check_one(i) for i in tqdm(range(n), desc="checking", unit="sample")]
    per: dict[str, list] = defaultdict(list)
    for r in results:
        per[r[0]].append(r)
    n_bad = 0
    for name, rows in per.items():
        ok = [r for r in rows if r[1] is None]
        bad = [r for r in rows if r[1] is not None]
        n_bad += len(bad)
        lens = np.array([r[2] for r in ok]) if ok else np.zeros(1)
        mix = Counter(r[3] for r in ok)
        print(f"\n== {name}: {len(rows)} samples, {len(ok)} ok, {len(bad)} with problems", file=out)
        print("  modality mix: " + ", ".join(f"{k} {v}" for k, v in mix.most_common()), file=out)
        p = np.percentile(lens, [50, 90, 99]).astype(int)
        print(f"  tokens: p50 {p[0]}  p90 {p[1]}  p99 {p[2]}  max {lens.max()}  (data.max_length "
              f"{cfg.data.max_length})", file=out)
        kinds = Counter(r[1] for r in bad)
        for kind, count in kinds.most_common():
            print(f"  problem {kind!r}: {count}", file=out)
            for r in [r for r in bad if r[1] == kind][:examples]:
                print(f"    {r[4]}", file=out)
    print(f"\n{'FAIL' if n_bad else 'OK'}: {n} samples, {n_bad} with problems", file=out)
    return n_bad


def main(argv: list[str] | None = None) -> int:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from vita.config import CONF_DIR, register_configs, register_resolvers
    from vita.errors import VitaError

    args = list(sys.argv[1:] if argv is None else argv)
    workers = None
    for a in list(args):
        if a.startswith("--workers="):
            workers = int(a.split("=", 1)[1])
            args.remove(a)
    register_configs()
    register_resolvers()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=args)
        OmegaConf.resolve(cfg)
        return 1 if run_check(cfg, workers) else 0
    except VitaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
