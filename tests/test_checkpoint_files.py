"""Checkpoint folders on disk (manifest checks, resume choice, pruning, RNG), config diffs, SLURM helpers."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from vita.engine.checkpoint import (
    MANIFEST,
    check_complete,
    find_resumable,
    prune,
    rng_state,
    set_rng_state,
    tag_for,
)
from vita.engine.distributed import first_slurm_host, slurm_port
from vita.engine.run_dir import config_diff
from vita.errors import CheckpointError

FILES = {"mp_rank_00_model_states.pt": b"m" * 100, "zero/optim_states.pt": b"o" * 50, "rng_rank0.json": b"{}"}


def make_ckpt(root: Path, step: int, manifest: bool = True) -> Path:
    """A checkpoint folder as save_checkpoint leaves it: files, then a manifest of their sizes."""
    path = root / tag_for(step)
    for name, data in FILES.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    if manifest:
        sizes = {name: len(data) for name, data in FILES.items()}
        (path / MANIFEST).write_text(json.dumps({"step": step, "files": sizes}))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "checkpoints"
    r.mkdir()
    return r


def test_tag_for_sorts_like_steps():
    """Tags are zero-padded so lexical order is step order."""
    assert tag_for(5) == "step_00000005"
    assert sorted(tag_for(s) for s in (100, 9, 20)) == [tag_for(9), tag_for(20), tag_for(100)]


def test_complete_checkpoint_is_found(root):
    """The newest complete checkpoint is chosen, and check_complete finds nothing wrong."""
    make_ckpt(root, 10)
    newest = make_ckpt(root, 20)
    assert check_complete(newest) is None
    assert find_resumable(root) == newest


def test_complete_checkpoint_newer_than_latest_wins(root):
    """A crash between publishing a folder and moving ``latest`` loses nothing: the newer complete one is used."""
    make_ckpt(root, 10)
    newer = make_ckpt(root, 20)
    (root / "latest").write_text(tag_for(10) + "\n")
    assert find_resumable(root) == newer


@pytest.mark.parametrize("manifest", ["[]", "null", '{"files": []}', '{"files": {"a": "x"}}'])
def test_wrong_shaped_manifest_is_reported_not_raised(root, manifest):
    bad = make_ckpt(root, 10)
    (bad / "MANIFEST.json").write_text(manifest)
    assert "unreadable" in check_complete(bad)


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda p: (p / "zero/optim_states.pt").write_bytes(b"o" * 10), "zero/optim_states.pt is 10 bytes, expected 50"),
        (lambda p: (p / "mp_rank_00_model_states.pt").unlink(), "lacks mp_rank_00_model_states.pt"),
        (lambda p: (p / MANIFEST).unlink(), f"has no {MANIFEST}"),
        (lambda p: (p / MANIFEST).write_text("{not json"), "is unreadable"),
    ],
    ids=["truncated-file", "missing-file", "missing-manifest", "bad-manifest"],
)
def test_damaged_checkpoint_skipped_with_warning(root, caplog, damage, problem):
    """A damaged newest checkpoint is skipped with a warning naming the problem; the previous one is used."""
    good = make_ckpt(root, 10)
    bad = make_ckpt(root, 20)
    damage(bad)
    assert problem in check_complete(bad)
    with caplog.at_level(logging.WARNING, logger="vita"):
        assert find_resumable(root) == good
    warnings = [r for r in caplog.records if r.name == "vita" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert tag_for(20) in warnings[0].getMessage() and problem in warnings[0].getMessage()


def test_damaged_latest_falls_back_to_older(root, caplog):
    """``latest`` pointing at a damaged checkpoint still falls back to the newest complete one."""
    make_ckpt(root, 10)
    good = make_ckpt(root, 20)
    bad = make_ckpt(root, 30, manifest=False)
    (root / "latest").write_text(bad.name)
    with caplog.at_level(logging.WARNING, logger="vita"):
        assert find_resumable(root) == good
    assert bad.name in caplog.text


def test_none_usable_raises(root):
    """Checkpoints exist but none is complete: CheckpointError with every problem, never a silent restart."""
    make_ckpt(root, 10, manifest=False)
    (make_ckpt(root, 20) / "rng_rank0.json").unlink()
    with pytest.raises(CheckpointError) as ei:
        find_resumable(root)
    msg = str(ei.value)
    assert f"{tag_for(10)} has no {MANIFEST}" in msg
    assert f"{tag_for(20)} lacks rng_rank0.json" in msg
    assert "train.resume_from" in msg


def test_empty_or_missing_root_is_none(root, tmp_path):
    """No checkpoints yet (empty or absent folder, or only temp folders) means a fresh start."""
    assert find_resumable(root) is None
    assert find_resumable(tmp_path / "absent") is None
    (root / ".tmp-step_00000010").mkdir()
    assert find_resumable(root) is None


def test_prune_keeps_newest_and_drops_temp(root):
    """prune keeps the newest keep_last checkpoints and removes half-written temp folders."""
    for s in (5, 10, 15, 20):
        make_ckpt(root, s)
    (root / ".tmp-step_00000025").mkdir()
    (root / "latest").write_text(tag_for(20))
    prune(root, keep_last=2)
    assert sorted(p.name for p in root.iterdir()) == ["latest", tag_for(15), tag_for(20)]


def test_prune_keeps_at_least_one(root):
    """keep_last=0 still keeps the newest checkpoint (resume needs one)."""
    for s in (1, 2):
        make_ckpt(root, s)
    prune(root, keep_last=0)
    assert [p.name for p in root.iterdir()] == [tag_for(2)]


def _draw() -> tuple:
    return ([random.random() for _ in range(3)], random.gauss(0, 1), np.random.rand(3).tolist(),
            float(np.random.standard_normal()), torch.rand(3).tolist(), torch.randn(2).tolist())


def test_rng_round_trip_through_json():
    """Saved (as JSON) and restored RNG state replays python, numpy and torch sequences exactly."""
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.standard_normal()  # leave cached Gaussians in the state
    state = json.loads(json.dumps(rng_state()))
    first = _draw()
    _draw()  # advance further
    set_rng_state(state)
    assert _draw() == first


def test_rng_state_differs_after_draws():
    """The captured state actually changes as the generators advance."""
    a = rng_state()
    _draw()
    b = rng_state()
    assert a["python"] != b["python"] and a["numpy"] != b["numpy"] and a["torch"] != b["torch"]


# ---------------------------------------------------------------- run dir config diff


def test_config_diff_reports_changed_added_removed():
    """Changed, added and removed nested keys are listed as 'key: old -> new'."""
    old = {"model": {"backbone": "tiny-qwen2", "overrides": {"layers": 2}}, "optim": {"lr": 0.001, "betas": [0.9, 0.99]}}
    new = {"model": {"backbone": "qwen2.5-0.5b", "overrides": {"layers": 2, "hidden_size": 32}},
           "optim": {"betas": [0.9, 0.95]}}
    assert config_diff(old, new) == [
        "model.backbone: 'tiny-qwen2' -> 'qwen2.5-0.5b'",
        "model.overrides.hidden_size: None -> 32",
        "optim.betas: [0.9, 0.99] -> [0.9, 0.95]",
        "optim.lr: 0.001 -> None",
    ]


def test_config_diff_ignores_resumable_keys():
    """Run length, logging and housekeeping may change on resume; equal configs have no diff."""
    old = {"train": {"max_steps": 10, "log_every": 1, "seed": 1}, "logging": {"loggers": ["jsonl"]},
           "data": {"num_workers": 0}, "engine": {"timeout_min": 30}}
    new = {"train": {"max_steps": 99, "log_every": 5, "seed": 1}, "logging": {"loggers": ["wandb"]},
           "data": {"num_workers": 4}, "engine": {"timeout_min": 5}}
    assert config_diff(old, new) == []
    assert config_diff(old, old) == []
    new["train"]["seed"] = 2
    assert config_diff(old, new) == ["train.seed: 1 -> 2"]


# ---------------------------------------------------------------- SLURM helpers


@pytest.mark.parametrize(
    "nodelist, host",
    [
        ("node[03-05,9],gpu1", "node03"),
        ("gpu7", "gpu7"),
        ("gpu7,gpu8", "gpu7"),
        ("gpu1,node[03-05]", "gpu1"),
        ("node[9]", "node9"),
        ("node[12,3-4]", "node12"),
        (" cn-a[001-004] ", "cn-a001"),
    ],
)
def test_first_slurm_host(nodelist, host):
    """The master address is the first host of the SLURM node list."""
    assert first_slurm_host(nodelist) == host


def test_slurm_port_in_range_and_stable():
    """The port is in 15000-19999, the same for every task of a job, and spreads across jobs."""
    jobs = ["0", "1", "123456", "4999", "5000", "99999999", "12345_7", "abc"]
    ports = [slurm_port(j) for j in jobs]
    assert all(15000 <= p <= 19999 for p in ports)
    assert ports == [slurm_port(j) for j in jobs]
    assert len({slurm_port(str(j)) for j in range(1000, 1100)}) == 100
