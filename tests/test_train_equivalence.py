"""ZeRO 0-3 x world size 1 and 2 follow one fp32 trajectory, equal to a plain torch loop.

World 1 runs micro-batch 2 x grad_accum 2; world 2 runs micro-batch 2 on each of two gloo ranks
(torchrun): the same global batches of 4, split differently. The loss is normalised by the
global token count, so the trajectories must agree to 1e-5.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.conftest import find_run, losses, quiet, read_json, run_vita

STEPS = 12
COMMON = ["experiment=smoke", "data.limit=96", f"train.max_steps={STEPS}", "train.ckpt_every=0",
          "optim.lr=3e-3", "optim.warmup_steps=3", "engine.stage3_param_persistence_threshold=0"]
LAYOUT = {1: ["engine.micro_batch_size=2", "engine.grad_accum=2"], 2: ["engine.micro_batch_size=2", "engine.grad_accum=1"]}

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory) -> dict[tuple[int, int], list[float]]:
    """World 1: the four ZeRO stages as one Hydra multirun (four jobs, one after the other, in one process:
    one interpreter start-up instead of four); world 2: one torchrun per stage."""
    root = tmp_path_factory.mktemp("eq")
    out = {}
    run_vita(["-m", *quiet("z_w1", root), *COMMON, *LAYOUT[1], "engine=zero0,zero1,zero2,zero3"])
    for cfg_file in sorted((root / "z_w1").rglob("vita_config.json")):
        stage = read_json(cfg_file)["engine"]["zero_stage"]
        assert (stage, 1) not in out, f"two world-1 runs of ZeRO-{stage}"
        out[(stage, 1)] = losses(cfg_file.parent)
    assert sorted(out) == [(s, 1) for s in range(4)], sorted(out)
    for stage in (0, 1, 2, 3):
        name = f"z{stage}_w2"
        proc = run_vita([*quiet(name, root), *COMMON, *LAYOUT[2], f"engine=zero{stage}"], world=2)
        CONSOLE[stage] = proc.stdout + proc.stderr
        out[(stage, 2)] = losses(find_run(root, name))
    return out


CONSOLE: dict[int, str] = {}
"""What each 2-rank run printed (stdout and stderr), by ZeRO stage."""


def plain_torch_losses() -> list[float]:
    """The same run written as a plain torch loop: no DeepSpeed, one process, whole global batch."""
    from hydra import compose, initialize_config_dir
    from transformers import AutoTokenizer

    from vita.config import CONF_DIR, register_configs, register_resolvers
    from vita.data import Position, build_data
    from vita.engine.optim import make_scheduler_factory, param_groups
    from vita.model import build_model
    from vita.stage import apply_stage

    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*COMMON, "engine.micro_batch_size=4", "engine.grad_accum=1"])
    torch.manual_seed(cfg.train.seed)
    tok = AutoTokenizer.from_pretrained(cfg.model.tokenizer)
    model = build_model(cfg.model, vocab_size=len(tok))
    lrs = apply_stage(model, cfg.stage, cfg.optim.lr)
    opt = torch.optim.AdamW(param_groups(model.module_groups(), lrs, cfg.optim.weight_decay), lr=cfg.optim.lr,
                            betas=tuple(cfg.optim.betas), eps=cfg.optim.eps)
    sched = make_scheduler_factory(cfg.optim.scheduler, STEPS, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio)(opt)
    data = build_data(cfg, tok, rank=0, world=1)
    out = []
    for _, (mb,) in zip(range(STEPS), (b for _, b in data.loader.iterate(Position()))):
        res = model(input_ids=mb["input_ids"], labels=mb["labels"], attention_mask=mb["attention_mask"])
        loss = res["ce_sum"] / res["num_tokens"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.engine.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        out.append(float(loss))
    return out


def test_loss_falls_everywhere(trajectories):
    for key, traj in trajectories.items():
        assert len(traj) == STEPS, key
        assert all(math.isfinite(x) for x in traj), key
        assert sum(traj[-3:]) / 3 < traj[0] - 0.3, (key, traj)


def test_all_stages_and_world_sizes_agree(trajectories):
    ref = trajectories[(0, 1)]
    for key, traj in trajectories.items():
        diff = max(abs(a - b) for a, b in zip(ref, traj))
        assert diff < 1e-5, f"ZeRO-{key[0]} world {key[1]} differs from ZeRO-0 world 1 by {diff}"


def test_plain_torch_loop_matches(trajectories):
    plain = plain_torch_losses()
    diff = max(abs(a - b) for a, b in zip(plain, trajectories[(0, 1)]))
    assert diff < 1e-5, f"plain torch {plain} vs vita {trajectories[(0, 1)]}"


def test_two_rank_zero3_console_shows_each_warning_once(trajectories):
    """ZeRO-3 on two ranks: DeepSpeed calls torch's deprecated collectives every step on both ranks (a FutureWarning
    each time) and logs its accelerator choice per rank; the console shows no warning line twice
    (vita/console.py: filtered with a reason, once per process, ranks > 0 errors only)."""
    text = CONSOLE[3]
    lines = [re.sub(r"^(\[[^\]]*\])+\s*-?\s*", "", ln).strip() for ln in re.split(r"[\r\n]", text)]
    warned = [ln for ln in lines if re.search(r"warn|deprecat", ln, re.IGNORECASE)]
    repeated = {ln: n for ln, n in Counter(warned).items() if n > 1}
    assert not repeated, repeated
    assert "is deprecated" not in text and "return func(*args, **kwargs)" not in text, text[-3000:]
    assert "built successfully" not in text, text[-3000:]  # DeepSpeed's print on every load, on every rank
    assert "world size 2 (torchrun)" in text


def test_world_two_uses_one_run_dir(trajectories, tmp_path_factory):
    root = Path(str(tmp_path_factory.getbasetemp())) / "eq0"
    for stage in range(4):
        assert len(list((root / f"z{stage}_w2").rglob("vita_config.json"))) == 1
