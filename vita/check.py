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
from omegaconf import OmegaConf

from vita.errors import one_line_errors

_STATE: dict = {}


def _init(source, proc) -> None:
    _STATE["source"], _STATE["proc"] = source, proc


def check_one(i: int) -> dict:
    """Record ``i`` checked: ``dataset``, ``kind`` (problem or None), ``length``, ``full_length``, ``lost``
    (supervised tokens truncation removes), ``mix`` (modalities), ``msg``, ``id``, ``where``, ``key``."""
    from vita.data.dataset import OverLong
    from vita.data.schema import BadSample

    source, proc = _STATE["source"], _STATE["proc"]
    name = source.dataset_of(i)
    row = {"dataset": name, "kind": None, "length": 0, "full_length": 0, "lost": 0, "mix": "", "msg": "",
           "id": None, "where": "", "key": source.record_key(i)}
    try:
        raw, where, roots, name = source.read(i)
        row["where"] = where
        m = proc.measure_sample(raw, where, roots)  # header-based lengths (what the samplers use)
        item = proc.load(raw, where, roots, speech_codes=m.speech)  # and a full decode (spoken answers: measured)
    except OverLong as e:
        row.update(id=e.sample_id, where=e.where, full_length=e.length)
        if e.policy == "fail":
            row.update(kind=e.kind, msg=f"{e} (data.overlong=fail)")
        return row
    except BadSample as e:
        row.update(kind=e.kind, msg=str(e), id=e.sample_id, where=e.where)
        return row
    mods = [k for k in ("image", "video", "audio") if raw.get(k)]
    row.update(length=len(item["input_ids"]), full_length=m.full_length, lost=m.lost_supervised,
               mix="+".join(mods) or "text", id=m.sample_id)
    return row


def tokenizer_and_spec(cfg, out=None, model_first: bool = False):
    """The tokenizer and :class:`~vita.data.spec.DataSpec` for ``cfg``: the model (built, weights aside) gives its
    encoders' token counts when ``data.media_spec`` is unset, or always with ``model_first`` (as training does:
    the model's spec wins over the preset; ``python -m vita.data.shard`` needs exactly training's counts)."""
    from vita.data import resolve_spec
    from vita.model.tokens import ensure_media_tokens, load_tokenizer

    out = out or sys.stdout
    has_media = OmegaConf.select(cfg, "model.vision.tower") or OmegaConf.select(cfg, "model.audio.encoder")
    if has_media and (model_first or not OmegaConf.select(cfg, "data.media_spec")):  # the encoders' token counts
        from vita.model.builder import build_for

        print("building the model for its encoders' token counts " + ("(as training uses them)" if model_first else
              "(set data.media_spec=PRESET to skip)"), file=out)
        built = build_for(cfg.model)  # as training builds it (weights aside)
        return built.tokenizer, with_speech(cfg, resolve_spec(cfg.data, built.tokenizer, built.spec))
    tokenizer = load_tokenizer(cfg.model)  # model.tokenizer, else model.pretrained (a GGUF's via its cached folder)
    if has_media:
        ensure_media_tokens(tokenizer)  # as training adds them for a model with encoders
    return tokenizer, with_speech(cfg, resolve_spec(cfg.data, tokenizer, None))


def with_speech(cfg, spec):
    """``spec`` with the speech fields of ``cfg.model.speech`` when the model speaks and the spec does not say so yet
    (a spec from a preset, or none for a text model: then one that takes no media)."""
    from dataclasses import replace

    from vita.data.speech import speech_spec
    from vita.spec import DataSpec

    fields = speech_spec(OmegaConf.select(cfg, "model.speech"))
    if fields["speech_codec"] is None or (spec is not None and spec.speech_codec is not None):
        return spec
    if spec is None:
        spec = DataSpec(image_size=None, audio_feature=None, n_mels=0, image_token_id=-1, video_token_id=-1,
                        audio_token_id=-1)
    return replace(spec, **fields)


def run_check(cfg, workers: int | None = None, examples: int = 3, out=None) -> int:
    """Check ``cfg.data``; print the report to ``out``; return the number of problems.

    Every over-long sample is listed with its token count and the limit; under ``data.overlong=truncate``
    or ``skip`` they are not problems (the run handles them), under ``fail`` they are."""
    from tqdm.auto import tqdm

    from vita.data import make_processor, open_source
    from vita.data.dataset import duplicate_ids

    out = out or sys.stdout
    tokenizer, spec = tokenizer_and_spec(cfg, out, model_first=cfg.data.format == "shards")
    if cfg.data.format == "shards":  # the manifests and the samples left out at sharding
        from vita.data.shards.check import check_shards

        return check_shards(cfg, tokenizer, spec, out, examples)
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
    ok_rows = [r for r in results if r["kind"] is None]
    for pos, e in duplicate_ids([(r["dataset"], r["id"], r["key"], r["where"]) for r in ok_rows]).items():
        ok_rows[pos].update(kind=e.kind, msg=str(e))
    per: dict[str, list] = defaultdict(list)
    for r in results:
        per[r["dataset"]].append(r)
    n_bad = 0
    limit = cfg.data.max_length
    for name, rows in per.items():
        ok = [r for r in rows if r["kind"] is None]
        bad = [r for r in rows if r["kind"] is not None]
        n_bad += len(bad)
        lens = np.array([r["length"] for r in ok if r["length"]]) if any(r["length"] for r in ok) else np.zeros(1)
        mix = Counter(r["mix"] for r in ok if r["mix"])
        print(f"\n== {name}: {len(rows)} samples, {len(ok)} ok, {len(bad)} with problems", file=out)
        print("  modality mix: " + ", ".join(f"{k} {v}" for k, v in mix.most_common()), file=out)
        p = np.percentile(lens, [50, 90, 99]).astype(int)
        print(f"  tokens: p50 {p[0]}  p90 {p[1]}  p99 {p[2]}  max {lens.max()}  (data.max_length {limit})", file=out)
        long_rows, keys = [], set()
        for r in rows:
            if r["full_length"] > limit and r["key"] not in keys and (r["kind"] is None or r["kind"] == "over-long sample"):
                keys.add(r["key"])
                long_rows.append(r)
        if long_rows:
            how = {"truncate": "truncated", "skip": "skipped", "fail": "stop the run"}[cfg.data.overlong]
            lost = sum(r["lost"] for r in long_rows)
            tail = f", {lost} supervised tokens lost" if cfg.data.overlong == "truncate" else ""
            print(f"  over-long: {len(long_rows)} sample(s) > data.max_length {limit} ({how}, data.overlong="
                  f"{cfg.data.overlong}{tail})", file=out)
            for r in long_rows:
                cut = f", {r['lost']} supervised tokens lost" if cfg.data.overlong == "truncate" else ""
                print(f"    {r['where']} sample '{r['id']}': {r['full_length']} tokens > {limit}{cut}", file=out)
        kinds = Counter(r["kind"] for r in bad)
        for kind, count in kinds.most_common():
            print(f"  problem {kind!r}: {count}", file=out)
            for r in [r for r in bad if r["kind"] == kind][:examples]:
                print(f"    {r['msg']}", file=out)
    print(f"\n{'FAIL' if n_bad else 'OK'}: {n} samples, {n_bad} with problems", file=out)
    return n_bad


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    """``python -m vita.check [--workers=N] [--config-dir DIR] [overrides]``; exit 0 clean, 1 problems, 2 error."""
    from vita.cli import compose_cli

    args = list(sys.argv[1:] if argv is None else argv)
    workers = None
    for a in list(args):
        if a.startswith("--workers="):
            workers = int(a.split("=", 1)[1])
            args.remove(a)
    cfg = compose_cli(args)
    return 1 if run_check(cfg, workers) else 0


if __name__ == "__main__":
    sys.exit(main())
