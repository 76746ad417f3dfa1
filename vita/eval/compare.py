"""``python -m vita.eval.compare RUN_DIR``: the run's in-loop eval figures, first evaluation against last.

Reads ``metrics.jsonl`` (the ``eval/<set>/<metric>`` rows that ``train.eval_at_start`` and
``train.eval_every`` wrote) and prints one line per set and metric: before, after and the change.
``make demo`` ends its training with it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from vita.engine.metrics import read_metrics
from vita.errors import VitaError, one_line_errors


def eval_rows(run_dir: Path) -> list[dict]:
    """The ``metrics.jsonl`` rows of ``run_dir`` that hold eval figures, in step order."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise VitaError(f"{path}: no such file; pass a run dir (it holds metrics.jsonl)")
    return [r for r in read_metrics(path) if any(k.startswith("eval/") for k in r)]


def compare_table(run_dir: Path) -> str:
    """``set  metric  before (step a)  after (step b)  change`` lines for every eval metric but ``ppl``."""
    rows = eval_rows(run_dir)
    if not rows:
        raise VitaError(f"{run_dir}: no eval rows in metrics.jsonl; set data.eval sets and train.eval_every / "
                        "train.eval_at_start")
    first, last = rows[0], rows[-1]
    keys = sorted(k for k in last if k.startswith("eval/") and not k.endswith("/ppl") and k in first)
    head = f"{'eval set':<16}{'metric':<8}{'step ' + str(first['step']):>12}{'step ' + str(last['step']):>12}{'change':>10}"
    lines = [head]
    for k in keys:
        _, name, metric = k.split("/", 2)
        a, b = float(first[k]), float(last[k])
        lines.append(f"{name:<16}{metric:<8}{a:>12.4g}{b:>12.4g}{b - a:>+10.3g}")
    return "\n".join(lines)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vita.eval.compare RUN_DIR", file=sys.stderr)
        return 2
    print(compare_table(Path(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
