"""A real run's newest checkpoint truncated or missing a file: the restart resumes from the previous
complete one and says what was wrong; nothing usable: a clear error, not a fresh start."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import find_run, quiet, run_vita

BASE = ["experiment=smoke", "data.limit=64", "train.ckpt_every=2", "train.keep_last=3", "optim.warmup_steps=1"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """A 6-step run with checkpoints at steps 2, 4 and 6."""
    root = tmp_path_factory.mktemp("damaged") / "outputs"
    run_vita([*quiet("base", root), *BASE, "train.max_steps=6"])
    return root, find_run(root, "base")


def _copy(finished, tmp_path) -> tuple[Path, list[str]]:
    root, base = finished
    run_dir = tmp_path / "run"
    shutil.copytree(base, run_dir)
    return run_dir, [*quiet("base", root), f"hydra.run.dir={run_dir}", *BASE, "train.max_steps=8"]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGE = {
    "truncated": (lambda c: _truncate(c / "mp_rank_00_model_states.pt"),
                  "step_00000006/mp_rank_00_model_states.pt is"),
    "missing": (lambda c: (c / "rng_rank0.json").unlink(), "step_00000006 lacks rng_rank0.json"),
    "no-manifest": (lambda c: (c / "MANIFEST.json").unlink(), "step_00000006 has no MANIFEST.json"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_newest_damaged_falls_back_to_previous(finished, tmp_path, kind):
    run_dir, args = _copy(finished, tmp_path)
    damage, named = DAMAGE[kind]
    damage(run_dir / "checkpoints" / "step_00000006")
    proc = run_vita(args)
    out = proc.stdout + proc.stderr
    assert "skipped damaged checkpoints: " + named in out, out[-3000:]
    assert "resumed from" in out and "step_00000004 at step 4" in out, out[-3000:]
    assert (run_dir / "final" / "model.safetensors").is_file()


def test_no_usable_checkpoint_is_an_error_not_a_fresh_start(finished, tmp_path):
    run_dir, args = _copy(finished, tmp_path)
    for ckpt in (run_dir / "checkpoints").glob("step_*"):
        _truncate(ckpt / "mp_rank_00_model_states.pt")
    metrics_before = (run_dir / "metrics.jsonl").read_text()
    proc = run_vita(args, check=False)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "no usable checkpoint" in proc.stderr and "train.resume_from" in proc.stderr, proc.stderr[-2000:]
    for tag in ("step_00000002", "step_00000004", "step_00000006"):
        assert tag in proc.stderr
    assert (run_dir / "metrics.jsonl").read_text() == metrics_before  # nothing trained over the old run
