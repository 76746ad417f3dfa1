"""The step-time benchmark runs end to end and reports a time for both loops (it measures; no bound is tested)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_step_time_bench_reports_both_loops(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "vita.bench.step_time", "--steps", "20", "--warmup", "2", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    for loop in ("vita", "plain"):
        assert result[loop]["steps"] == 20
        assert result[loop]["median_ms"] > 0 and result[loop]["mean_ms"] > 0
    assert math.isfinite(result["ratio_vita_over_plain_median"])
