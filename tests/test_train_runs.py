"""End-to-end runs: the former demo default (chatterbot_tiny), a two-job multirun, bf16 + gradient checkpointing + every logger."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import find_run, load_final, losses, quiet, read_json, run_vita

pytestmark = pytest.mark.slow


def test_chatterbot_tiny_trains_and_says_where_things_are(out_root):
    """The former embedded default (tiny Qwen2 on chatterbot, CPU) trains 6 epochs; the export is a plain HF LLM."""
    proc = run_vita([f"output_root={out_root}", "experiment=chatterbot_tiny", "logging.progress_bar=false"], timeout=900)
    run_dir = find_run(out_root, "chatterbot_tiny")
    for what in ("final model", "checkpoints", "metrics", "loss plot"):
        assert what in proc.stdout
    traj = losses(run_dir)
    assert len(traj) == read_json(run_dir / "COMPLETE.json")["step"] > 500
    first, last = sum(traj[:20]) / 20, sum(traj[-50:]) / 50
    assert last < first - 2.5, (first, last)
    assert (run_dir / "loss.png").stat().st_size > 10_000

    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    tok = AutoTokenizer.from_pretrained(run_dir / "final")
    sd = load_final(run_dir)
    assert torch.equal(lm.state_dict()["model.embed_tokens.weight"], sd["model.embed_tokens.weight"])
    ids = tok("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", return_tensors="pt").input_ids
    out = lm.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids.shape[1]


def test_multirun_two_learning_rates(out_root):
    run_vita(["-m", *quiet("sweep", out_root), "experiment=smoke", "data.limit=96", "optim.lr=1e-4,3e-3"])
    dirs = sorted((out_root / "sweep" / "multirun").iterdir())
    runs = [d for d in dirs if (d / "metrics.jsonl").is_file()]
    assert len(runs) == 2 and all("optim.lr:" in d.name for d in runs), dirs
    by_lr = {read_json(d / "vita_config.json")["optim"]["lr"]: d for d in runs}
    assert set(by_lr) == {1e-4, 3e-3}
    slow, fast = losses(by_lr[1e-4]), losses(by_lr[3e-3])
    assert len(slow) == len(fast) == 10
    assert slow != fast and fast[-1] < slow[-1]


def test_bf16_gradient_checkpointing_zero2_and_all_loggers(out_root):
    run_vita([*quiet("bf16", out_root), "experiment=smoke", "data.limit=96", "engine=zero2", "engine.precision=bf16",
              "engine.gradient_checkpointing=true", "logging.loggers=[console,jsonl,wandb,tensorboard]"])
    run_dir = find_run(out_root, "bf16")
    traj = losses(run_dir)
    assert all(math.isfinite(x) for x in traj) and traj[-1] < traj[0]
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    import json

    row = json.loads(rows[-1])
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "step_time_s"):
        assert isinstance(row[key], float) and math.isfinite(row[key]), key
