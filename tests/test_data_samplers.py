"""Samplers: grouping properties, and exact resume in a new process with worker processes."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from tests.conftest import PY, ROOT, vita_env
from vita.data.samplers import LengthGroupedSampler, ModalityLengthGroupedSampler, RandomSampler, TokenBudgetSampler
from vita.errors import CheckpointError

SAMPLERS = ["random", "sequential", "length_grouped", "modality_length_grouped", "token_budget",
            "token_budget+packing"]


def job(mode: str, steps: int, state) -> dict:
    proc = subprocess.run([PY, "-m", "tests.sampler_resume_job", ",".join(SAMPLERS), mode, str(steps), str(state)], cwd=ROOT,
                          env=vita_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_resume_in_new_process_with_workers(tmp_path):
    """For every sampler (and token_budget packing across the batch): k steps, save the loader state, restore in
    a fresh process (2 data workers):
    the remaining batch sequence equals that of an uninterrupted run."""
    full = job("full", 30, tmp_path / "s.json")  # > 1 epoch for every sampler
    first = job("first", 7, tmp_path / "s.json")
    rest = job("rest", 23, tmp_path / "s.json")
    for name in SAMPLERS:
        assert first[name] == full[name][:7], name
        assert rest[name] == full[name][7:], name
        assert len({tuple(p) for p, _ in full[name]}) == 30 and any(p[0] == 1 for p, _ in full[name]), name


def lengths(n=200, seed=0):
    return np.random.default_rng(seed).integers(1, 1000, n)


def test_state_dict_rejects_changed_data():
    """Resuming with other lengths (changed data) or another seed is refused, naming the field."""
    a = LengthGroupedSampler(num_samples=200, global_batch_size=8, seed=1, micro_per_step=2, lengths=lengths())
    b = LengthGroupedSampler(num_samples=200, global_batch_size=8, seed=1, micro_per_step=2, lengths=lengths(seed=1))
    with pytest.raises(CheckpointError, match="lengths"):
        b.load_state_dict(a.state_dict())
    c = RandomSampler(num_samples=200, global_batch_size=8, seed=2)
    with pytest.raises(CheckpointError, match="seed"):
        c.load_state_dict(RandomSampler(num_samples=200, global_batch_size=8, seed=1).state_dict())


def test_length_grouped_balances_micro_batches():
    """Each global batch is a megabatch of the epoch's permutation, dealt so token totals balance."""
    ls = lengths()
    s = LengthGroupedSampler(num_samples=200, global_batch_size=16, seed=1, micro_per_step=4, lengths=ls)
    flat = [i for st in range(s.steps_per_epoch) for i in s.batch(0, st)]
    assert len(set(flat)) == len(flat) == 192
    for st in range(s.steps_per_epoch):
        mbs = s.micro_batches(0, st)
        assert [len(m) for m in mbs] == [4, 4, 4, 4]
        totals = [int(ls[m].sum()) for m in mbs]
        assert max(totals) - min(totals) <= int(ls[sum(mbs, [])].max())


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0], ids=["text-only", "mixed", "media-only"])
def test_modality_length_grouped(share):
    """Full megabatches hold one modality; at most one mixed batch, placed last; works with one modality."""
    n = 203
    mods = np.arange(n) < int(n * share)
    s = ModalityLengthGroupedSampler(num_samples=n, global_batch_size=8, seed=4, micro_per_step=2,
                                     lengths=lengths(n), modalities=mods)
    assert s.steps_per_epoch == n // 8
    mixed = [st for st in range(s.steps_per_epoch) if len(set(mods[s.batch(0, st)].tolist())) > 1]
    assert mixed in ([], [s.steps_per_epoch - 1])
    flat = [i for st in range(s.steps_per_epoch) for i in s.batch(0, st)]
    assert len(set(flat)) == len(flat)


def test_token_budget_respects_budget_and_covers_data():
    """Each micro-batch costs <= budget (count x longest); every sample appears once per epoch plan."""
    ls = lengths(300)
    s = TokenBudgetSampler(num_samples=300, global_batch_size=4, seed=0, micro_per_step=2, lengths=ls,
                           token_budget=4000)
    assert sorted(i for mb in s.plan for i in mb) == list(range(300))
    for mb in s.plan:
        assert len(mb) * ls[mb].max() <= 4000
    e0 = [s.micro_batches(0, st) for st in range(s.steps_per_epoch)]
    e1 = [s.micro_batches(1, st) for st in range(s.steps_per_epoch)]
    assert e0 != e1 and all(len(x) == 2 for x in e0)
    p = TokenBudgetSampler(num_samples=300, global_batch_size=4, seed=0, micro_per_step=2, lengths=ls,
                           token_budget=4000, packing=True)
    assert all(ls[mb].sum() <= 4000 for mb in p.plan) and len(p.plan) < len(s.plan)


def test_a_sampler_refuses_an_unknown_option_naming_it():
    """An option no sampler takes fails when the config is validated (compose time) and at build, naming the key."""
    from hydra import compose, initialize_config_dir

    from vita.config import CONF_DIR, register_configs, validate
    from vita.errors import ConfigError
    from vita.registry import SAMPLERS

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["data.sampler=length_grouped", "+data.sampler_options.shuffle_buffer=8"])
    with pytest.raises(ConfigError, match=r"data\.sampler_options\.shuffle_buffer: sampler 'length_grouped' has no "
                                          r"option 'shuffle_buffer'"):
        validate(cfg)
    with pytest.raises(ConfigError, match="has no option 'token_budgte'.*Did you mean 'token_budget'"):
        SAMPLERS.build("token_budget", num_samples=8, global_batch_size=2, token_budgte=4)
