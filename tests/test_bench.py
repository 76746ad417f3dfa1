"""Benchmarks run end to end and report their figures (they measure; no timing bound is tested)."""

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


def test_bench_cli_writes_every_suite_and_the_arms_do_equal_work(tmp_path: Path) -> None:
    """`python -m vita.bench engine tokens` writes both sections; the four engine arms train the same
    weights on the same batches, so their losses agree (a timing is never asserted). One sample per step:
    the ~30 M-parameter arms cost ~4x less and still take two updates each before the last loss."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "vita.bench", "engine", "tokens", "--steps", "2", "--warmup", "1", "--block", "1",
         "--micro-batch", "1", "--docs", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads((tmp_path / "benchmarks.json").read_text())
    arms = record["engine"]["result"]["arms"]
    assert set(arms) == {"vita ZeRO-0", "vita ZeRO-2", "plain torch", "HF Trainer"}
    losses = [a["last_loss"] for a in arms.values()]
    assert max(losses) - min(losses) < 1e-3, arms
    assert all(a["steps"] == 2 and a["median_ms"] > 0 for a in arms.values())
    md = (tmp_path / "BENCHMARKS.md").read_text()
    for text in ("## Engine overhead", "| HF Trainer |", "## Token efficiency", "| token_budget + packing |",
                 "python -m vita.bench engine tokens", "torch "):
        assert text in md
    assert "## Data throughput" not in md  # not run


def test_data_section_gives_each_figure_its_range_over_the_runs() -> None:
    """The data suite's table: min–max over the runs per sample kind, the runs' load averages, stored sizes."""
    from vita.bench.__main__ import data_section

    def run(load, dec, npy):
        return {"loadavg_1min": load, "samples_per_s": {"video 16 frames": dec, "video 16 frames, stored npy": npy},
                "samples_per_cpu_s": {"video 16 frames": 2 * dec, "video 16 frames, stored npy": 2 * npy},
                "bytes": {"video 16 frames": 8_130_000, "video 16 frames, stored npy": 9_630_000}}

    text = "\n".join(data_section([run(6.0, 0.7, 20.0), run(9.5, 0.6, 8.0), run(7.0, 0.9, 12.5)]))
    assert "3 whole runs" in text and "load averages 6.00–9.50" in text
    assert "| video 16 frames | 0.60–0.90 | 1.20–1.80 | 8.13 |" in text
    assert "| video 16 frames, stored npy | 8.00–20.00 | 16.00–40.00 | 9.63 |" in text


# launch/gpu_bench.sh's CPU smoke path (both arms, the log's throughput and MFU) runs inside the device kit's smoke
# run: tests/test_device_kit.py::test_run_sh_smoke_runs_every_part_in_its_budget_on_the_kit_alone.
