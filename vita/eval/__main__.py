"""``python -m vita.eval TARGET [overrides] [options]``: score a model on eval sets.

TARGET is a run dir, an export, a HF folder, or nothing (the model of the overrides); see
:func:`vita.infer.load_target`. The sets are ``data.eval`` (in a data config, or
``'+data.eval={NAME:{annotations:[FILE],audio_root:DIR,metric:wer}}'``), or else every dataset of
``data=...`` as one set. Writes
``predictions.jsonl`` (one row per generated answer: set, index, id, prediction, reference) and
``metrics.json`` to ``--output`` and prints a table. ``--score PREDS.jsonl --metric wer`` re-scores
a predictions file without a model (``--output DIR``: its ``metrics.json`` goes there).

    python -m vita.eval outputs/demo/run data=demo --metric wer --limit 8
    python -m vita.eval model=smol_omni '+data.eval={speech:{annotations:[speech.jsonl],audio_root:DIR,metric:wer}}'
    python -m vita.eval RUN data=demo --metric asr_wer,asr_cer,first_chunk_ms   # a run with a speech decoder
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

from vita.errors import VitaError, one_line_errors


def _sets_config(cfg, args) -> dict:
    """``data.eval`` with the command-line settings applied; from ``data.datasets`` when it is empty."""
    from vita.config import EvalSetConfig

    sets = dict(cfg.data.get("eval") or {})
    if not sets:
        for d in cfg.data.get("datasets") or []:
            sets[d.name] = OmegaConf.structured(EvalSetConfig(
                annotations=list(d.annotations), image_root=d.image_root, video_root=d.video_root,
                audio_root=d.audio_root))
    if not sets:
        raise VitaError("no eval sets: add data.eval.<name> (annotations, metric) or pick data=<a vita-format data "
                        "config> whose datasets become the sets")
    out = {}
    for name, es in sets.items():
        es = OmegaConf.merge(OmegaConf.structured(EvalSetConfig), es)
        for key, val in (("metric", args.metric), ("limit", args.limit), ("max_new_tokens", args.max_new_tokens),
                         ("batch_size", args.batch_size), ("asr", args.asr)):
            if val is not None:
                es[key] = val
        if not args.sets or name in args.sets.split(","):
            out[str(name)] = es
    return out


def format_table(metrics: dict[str, dict[str, float]]) -> str:
    """Sets as rows, metrics as columns."""
    cols = ["samples", "loss", "ppl"] + sorted({k for m in metrics.values() for k in m} - {"samples", "loss", "ppl"})
    lines = ["set".ljust(16) + "".join(c.rjust(11) for c in cols)]
    for name, m in metrics.items():
        cells = [f"{int(m[c])}" if c == "samples" else (f"{m[c]:.4g}" if c in m else "-") for c in cols]
        lines.append(name[:15].ljust(16) + "".join(c.rjust(11) for c in cells))
    return "\n".join(lines)


def score_predictions(path: Path, metric: str) -> dict[str, dict[str, float]]:
    """Generation metrics of a ``predictions.jsonl`` (as ``vita.eval`` writes it), per set."""
    from vita.eval.metrics import compute_rows, parse_metrics

    names = parse_metrics(metric)
    by_set: dict[str, list[dict]] = defaultdict(list)
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_set[row.get("set", "predictions")].append(row)
    return {s: {"samples": len(rows), **compute_rows(names, rows)} for s, rows in by_set.items()}


def run_eval(target: str | None, overrides: list[str], args) -> dict[str, dict[str, float]]:
    """Load the target, score every set, write the files; returns ``set -> metrics``."""
    from vita.eval.runner import evaluate_set
    from vita.eval.sets import check_speech, load_eval_set
    from vita.infer import load_target

    loaded = load_target(target, overrides, dtype=args.dtype)
    sets = [load_eval_set(name, es, loaded.processor) for name, es in _sets_config(loaded.cfg, args).items()]
    check_speech(sets, loaded.model)
    out = Path(args.output) if args.output else (Path(target) / "eval" if target else Path("outputs") / "eval")
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, float]] = {}
    with (out / "predictions.jsonl").open("w") as f:
        for es in sets:
            metrics, rows = evaluate_set(loaded, es, progress=True)
            results[es.name] = metrics
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (out / "metrics.json").write_text(json.dumps({"target": loaded.source, "metrics": results}, indent=1))
    print(format_table(results))
    print(f"\npredictions: {out / 'predictions.jsonl'}\nmetrics    : {out / 'metrics.json'}")
    return results


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vita.eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("args", nargs="*", help="TARGET (run dir, export, HF folder, VITA folder; optional) and key=value overrides")
    ap.add_argument("--output", help="folder for predictions.jsonl and metrics.json (default TARGET/eval)")
    ap.add_argument("--metric", help="metrics for every set, comma-separated (wer, cer, exact, contains, choice, loss; "
                    "a model with a speech decoder: asr_wer, asr_cer, first_chunk_ms)")
    ap.add_argument("--asr", help="ASR for asr_wer/asr_cer: a Whisper folder (CTranslate2 or transformers; default the "
                    "shipped Whisper tiny.en)")
    ap.add_argument("--sets", help="only these sets (comma-separated names)")
    ap.add_argument("--limit", type=int, help="first N records of each set")
    ap.add_argument("--max-new-tokens", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--config-dir", "-cd", help="a config folder added to the search path (as for vita.run)")
    ap.add_argument("--score", help="re-score this predictions.jsonl with --metric (no model); --output gets metrics.json")
    args = ap.parse_intermixed_args(argv)
    if args.score:
        res = score_predictions(Path(args.score), args.metric or "exact")
        print(format_table(res))
        if args.output:  # the scores beside the predictions they come from
            out = Path(args.output)
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.json").write_text(json.dumps({"predictions": str(args.score), "metrics": res}, indent=1))
            print(f"\nmetrics    : {out / 'metrics.json'}")
        return 0
    from vita.infer import split_target

    target, overrides = split_target(args.args)
    if args.config_dir:
        overrides = ["--config-dir", args.config_dir, *overrides]
    run_eval(target, overrides, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
