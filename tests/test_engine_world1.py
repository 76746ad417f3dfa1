"""One rank, ZeRO-0: DeepSpeed's gradient all-reduce is skipped (an identity that flattens and copies every
gradient, docs/BENCHMARKS.md), and the weights after a few accumulated steps are bitwise those of the
all-reduce path. Run in a child process: it owns its process group and DeepSpeed's state."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import PY, ROOT, vita_env

CHILD = r"""
import copy, json, tempfile
from pathlib import Path
import torch
from vita.bench.harness import build, compose, init_single_process, preload
from vita.engine.engine import Trainer
from vita.stage import apply_stage

cfg = compose(["experiment=chatterbot_tiny", "engine=zero0", "engine.micro_batch_size=2", "engine.grad_accum=2",
               "train.max_steps=3"])
dist_info = init_single_process(cfg)
tokenizer, base = build(cfg)
models = [copy.deepcopy(base), copy.deepcopy(base)]
lrs = [apply_stage(m, cfg.stage, cfg.optim.lr) for m in models]
data, batches = preload(cfg, tokenizer, dist_info, 3)
with tempfile.TemporaryDirectory() as tmp:
    trainers = [Trainer(cfg, m, data, tokenizer, dist_info, Path(tmp) / str(k), lr)
                for k, (m, lr) in enumerate(zip(models, lrs))]
    skipped = trainers[0].engine.enable_backward_allreduce is False
    trainers[1].engine.enable_backward_allreduce = True  # DeepSpeed's own path
    losses = [[t.train_step(b)["loss"] for t in trainers] for b in batches]
    for t in trainers:
        t.close()
print(json.dumps({"skipped": skipped, "losses": losses,
                  "moved": any(not torch.equal(p, q) for p, q in zip(models[0].parameters(), base.parameters())),
                  "equal": all(torch.equal(p, q) for p, q in zip(models[0].parameters(), models[1].parameters()))}))
"""


def test_world1_zero0_skips_the_identity_all_reduce_bitwise():
    p = subprocess.run([PY, "-c", CHILD], cwd=ROOT, env=vita_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["skipped"], "world 1, ZeRO-0 should not run DeepSpeed's all-reduce"
    assert r["moved"], "the steps should update the weights"
    assert all(a == b for a, b in r["losses"]) and r["equal"], r
