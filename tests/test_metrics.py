"""Metric sinks (jsonl, console, tensorboard, wandb offline), read_metrics de-duplication and the loss plot."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from vita.engine.metrics import MetricsLogger, _stable_id, plot_loss, read_metrics


def logger(run_dir: Path, loggers: list[str], enabled: bool = True) -> MetricsLogger:
    return MetricsLogger(run_dir, loggers, enabled, run_name="test-run", config={"optim": {"lr": 0.1}})


def test_jsonl_writes_one_row_per_log(tmp_path):
    """Each log call appends a JSON row with the step and the metrics."""
    ml = logger(tmp_path, ["jsonl"])
    ml.log(1, {"loss": 2.5, "lr": 0.1})
    ml.log(2, {"loss": 2.0, "lr": 0.05, "note": "x"})
    ml.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 1, "loss": 2.5, "lr": 0.1}, {"step": 2, "loss": 2.0, "lr": 0.05, "note": "x"}]


def test_disabled_logger_writes_nothing(tmp_path):
    """Ranks other than 0 (enabled=False) write no file."""
    ml = logger(tmp_path, ["jsonl", "tensorboard"], enabled=False)
    ml.log(1, {"loss": 1.0})
    ml.close()
    assert list(tmp_path.iterdir()) == []


def test_console_logs_known_keys(tmp_path, caplog):
    """The console sink logs the step and the known keys to the 'vita' logger, and writes no file."""
    ml = logger(tmp_path, ["console"])
    with caplog.at_level(logging.INFO, logger="vita"):
        ml.log(7, {"loss": 1.23456, "lr": 3e-4, "secret": 5})
    assert "step 7  loss 1.235  lr 0.0003" in caplog.text
    assert "secret" not in caplog.text
    assert not (tmp_path / "metrics.jsonl").exists()


def test_read_metrics_later_rows_win(tmp_path):
    """Steps re-logged after a resume replace the earlier rows; output is sorted by step."""
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": float(10 - s)} for s in (1, 2, 3, 4)]
    rows += [{"step": s, "loss": 100.0 + s} for s in (3, 4, 5)]  # resumed from step 2
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    got = read_metrics(path)
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5]
    assert [r["loss"] for r in got] == [9.0, 8.0, 103.0, 104.0, 105.0]


def test_read_metrics_missing_file(tmp_path):
    """No metrics file yet reads as no rows."""
    assert read_metrics(tmp_path / "metrics.jsonl") == []


def test_plot_loss_writes_png(tmp_path):
    """plot_loss writes a non-empty PNG; without loss rows it writes nothing."""
    ml = logger(tmp_path, ["jsonl"])
    for s in range(1, 6):
        ml.log(s, {"loss": 3.0 / s, "lr": 1e-3 * s})
    out = plot_loss(tmp_path / "metrics.jsonl", tmp_path / "loss.png")
    assert out == tmp_path / "loss.png"
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    (tmp_path / "empty.jsonl").write_text(json.dumps({"step": 1, "lr": 0.1}) + "\n")
    assert plot_loss(tmp_path / "empty.jsonl", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_tensorboard_writes_scalars(tmp_path):
    """The tensorboard sink writes an events file holding the numeric, finite metrics."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ml = logger(tmp_path, ["tensorboard"])
    ml.log(1, {"loss": 2.0, "lr": 0.1, "note": "text"})
    ml.log(2, {"loss": 1.5, "lr": 0.05, "grad_norm": float("nan")})
    ml.close()
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert sorted(acc.Tags()["scalars"]) == ["loss", "lr"]
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(1, 2.0), (2, 1.5)]


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    """wandb in offline mode, its caches in tmp, WANDB_DIR unset (restored afterwards)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    # MetricsLogger calls os.environ.setdefault("WANDB_DIR", ...): set then delete so that
    # monkeypatch restores the variable's original state afterwards.
    monkeypatch.setenv("WANDB_DIR", "unused")
    monkeypatch.delenv("WANDB_DIR")


def test_wandb_offline_run_folder(tmp_path, wandb_offline):
    """The wandb sink, offline, writes a run folder under the run dir with a stable id."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ml = logger(run_dir, ["wandb"])
    run_id = ml._wandb.id
    ml.log(1, {"loss": 2.0, "note": "skipped"})
    ml.log(2, {"loss": 1.0})
    ml.close()
    assert run_id == _stable_id(run_dir)
    runs = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1, list((run_dir / "wandb").iterdir())
    data = list(runs[0].glob("*.wandb"))
    assert len(data) == 1 and data[0].stat().st_size > 0
