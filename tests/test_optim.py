"""Optimizer param groups, LR schedules, the generated DeepSpeed config and stage application."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from vita.config import EngineConfig, GroupConfig, LoraConfig, OptimConfig, StageConfig, StageGroups
from vita.engine.ds_config import build_ds_config
from vita.engine.optim import lr_lambda, make_scheduler_factory, param_groups, warmup_steps
from vita.errors import ConfigError
from vita.stage import apply_stage, trainable_table


class Toy(nn.Module):
    """Two module groups: ``enc`` (linear + layer norm) and ``head`` (linear + RMS-style norm)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8))
        self.head = nn.Module()
        self.head.proj = nn.Linear(8, 3)
        self.head.final_norm = nn.Parameter(torch.ones(8))

    def module_groups(self) -> dict[str, nn.Module]:
        return {"enc": self.enc, "head": self.head}


def by_name(groups: list[dict]) -> dict[str, dict]:
    return {g["name"]: g for g in groups}


def ids(params) -> set[int]:
    return {id(p) for p in params}


def stage(**groups) -> OmegaConf:
    def group(v: dict) -> GroupConfig:
        return GroupConfig(**{**v, "lora": LoraConfig(**v["lora"])} if "lora" in v else v)

    return OmegaConf.structured(StageConfig(name="s", groups=StageGroups(**{k: group(v) for k, v in groups.items()})))


# ---------------------------------------------------------------- param groups


def test_decay_on_matrices_only():
    """Weight matrices decay; biases and norm weights get weight_decay 0."""
    m = Toy()
    g = by_name(param_groups(m.module_groups(), {"enc": 1e-3, "head": 1e-3}, weight_decay=0.1))
    assert set(g) == {"enc.decay", "enc.no_decay", "head.decay", "head.no_decay"}
    assert ids(g["enc.decay"]["params"]) == {id(m.enc[0].weight)}
    assert ids(g["enc.no_decay"]["params"]) == {id(m.enc[0].bias), id(m.enc[1].weight), id(m.enc[1].bias)}
    assert ids(g["head.decay"]["params"]) == {id(m.head.proj.weight)}
    assert ids(g["head.no_decay"]["params"]) == {id(m.head.proj.bias), id(m.head.final_norm)}
    assert g["enc.decay"]["weight_decay"] == g["head.decay"]["weight_decay"] == 0.1
    assert g["enc.no_decay"]["weight_decay"] == g["head.no_decay"]["weight_decay"] == 0.0


def test_norm_named_matrix_gets_no_decay():
    """A 2-D parameter whose name says norm is treated as a norm (no decay)."""
    mod = nn.Module()
    mod.q_norm = nn.Linear(4, 4, bias=False)
    mod.proj = nn.Linear(4, 4, bias=False)
    g = by_name(param_groups({"llm": mod}, {"llm": 1.0}, weight_decay=0.5))
    assert ids(g["llm.no_decay"]["params"]) == {id(mod.q_norm.weight)}
    assert ids(g["llm.decay"]["params"]) == {id(mod.proj.weight)}


def test_one_lr_per_module_group():
    """Each module group's params carry that group's learning rate."""
    g = by_name(param_groups(Toy().module_groups(), {"enc": 1e-4, "head": 2e-3}, weight_decay=0.0))
    assert g["enc.decay"]["lr"] == g["enc.no_decay"]["lr"] == 1e-4
    assert g["head.decay"]["lr"] == g["head.no_decay"]["lr"] == 2e-3
    opt = torch.optim.AdamW(list(g.values()))
    assert sorted({pg["lr"] for pg in opt.param_groups}) == [1e-4, 2e-3]


def test_frozen_params_left_out():
    """Parameters with requires_grad False are not handed to the optimizer."""
    m = Toy()
    m.enc.requires_grad_(False)
    m.head.proj.bias.requires_grad_(False)
    groups = param_groups(m.module_groups(), {"head": 1e-3}, weight_decay=0.1)
    assert [g["name"] for g in groups] == ["head.decay", "head.no_decay"]
    got = set().union(*(ids(g["params"]) for g in groups))
    assert got == {id(m.head.proj.weight), id(m.head.final_norm)}


def test_shared_param_listed_once():
    """A parameter shared by two groups (tied weights) appears in only the first group."""
    m = Toy()
    shared = nn.Linear(8, 8)
    m.enc.append(shared)
    m.head.tied = shared
    groups = param_groups(m.module_groups(), {"enc": 1.0, "head": 1.0}, weight_decay=0.1)
    owners = [g["name"] for g in groups for p in g["params"] if p is shared.weight]
    assert owners == ["enc.decay"]


def test_all_frozen_is_a_config_error():
    """Nothing trainable is a ConfigError pointing at stage.groups."""
    m = Toy()
    m.requires_grad_(False)
    with pytest.raises(ConfigError, match="stage.groups"):
        param_groups(m.module_groups(), {}, weight_decay=0.0)


def test_trainable_group_without_lr_is_an_error():
    """A trainable group missing from group_lrs is reported by name."""
    with pytest.raises(ConfigError, match="'head'"):
        param_groups(Toy().module_groups(), {"enc": 1e-3}, weight_decay=0.0)


# ---------------------------------------------------------------- LR schedules


def test_warmup_is_linear_to_one():
    """Warmup rises linearly by 1/warmup per step and reaches exactly 1 at its last step."""
    fn = lr_lambda("cosine", total_steps=100, warmup_steps=10, min_ratio=0.0)
    vals = [fn(s) for s in range(10)]
    assert vals == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert fn(9) == 1.0 and fn(10) == 1.0


def test_cosine_decays_to_min_ratio():
    """Cosine: 1 after warmup, halfway at mid-decay, min_lr_ratio at the end and beyond."""
    fn = lr_lambda("cosine", total_steps=110, warmup_steps=10, min_ratio=0.1)
    assert fn(10) == pytest.approx(1.0)
    assert fn(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert fn(110) == pytest.approx(0.1)
    assert fn(500) == pytest.approx(0.1)
    decay = [fn(s) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(decay))
    assert fn(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)))


def test_linear_decays_linearly():
    """Linear: equal steps down from 1 to min_lr_ratio."""
    fn = lr_lambda("linear", total_steps=20, warmup_steps=0, min_ratio=0.2)
    vals = [fn(s) for s in range(21)]
    assert vals[0] == pytest.approx(1.0) and vals[20] == pytest.approx(0.2)
    diffs = [a - b for a, b in itertools.pairwise(vals)]
    assert diffs == pytest.approx([0.8 / 20] * 20)


def test_constant_stays_one_after_warmup():
    """Constant: warmup, then 1 forever (min_lr_ratio ignored)."""
    fn = lr_lambda("constant", total_steps=10, warmup_steps=2, min_ratio=0.3)
    assert [fn(s) for s in range(6)] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert fn(10_000) == 1.0


def test_unknown_schedule_is_a_config_error():
    """An unknown schedule kind names the valid ones."""
    with pytest.raises(ConfigError, match="cosine, linear, constant"):
        lr_lambda("exp", total_steps=10, warmup_steps=0, min_ratio=0.0)(3)


def test_scheduler_factory_scales_each_group_lr():
    """The LambdaLR from the factory multiplies each group's own peak lr."""
    p1, p2 = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1], "lr": 1.0}, {"params": [p2], "lr": 0.1}], lr=1.0)
    sched = make_scheduler_factory("linear", total_steps=4, warmup_steps=2, min_ratio=0.0)(opt)
    lrs = []
    for _ in range(5):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert [a for a, _ in lrs] == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.0])
    assert [b for _, b in lrs] == pytest.approx([0.05, 0.1, 0.1, 0.05, 0.0])


def test_warmup_steps_from_ratio_or_count():
    """warmup_steps wins over warmup_ratio; the ratio is rounded against the total."""
    assert warmup_steps(OptimConfig(warmup_steps=7, warmup_ratio=0.5), 100) == 7
    assert warmup_steps(OptimConfig(warmup_ratio=0.25), 10) == 2
    assert warmup_steps(OptimConfig(), 100) == 0


# ---------------------------------------------------------------- DeepSpeed config


def ds(world: int = 1, optim=None, **engine):
    return build_ds_config(OmegaConf.structured(EngineConfig(**engine)),
                           OmegaConf.structured(optim or OptimConfig()), world)


@pytest.mark.parametrize("micro, accum, world", [(4, 1, 1), (2, 3, 2), (1, 8, 4)])
def test_batch_arithmetic(micro, accum, world):
    """train_batch_size = micro x accum x world, and the parts are passed through."""
    cfg = ds(world, micro_batch_size=micro, grad_accum=accum)
    assert cfg["train_batch_size"] == micro * accum * world
    assert cfg["train_micro_batch_size_per_gpu"] == micro
    assert cfg["gradient_accumulation_steps"] == accum


@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_zero_stage(zero):
    """The ZeRO stage is passed through; stage-3 options only appear at stage 3."""
    z = ds(zero_stage=zero, stage3_param_persistence_threshold=123)["zero_optimization"]
    assert z["stage"] == zero
    assert ("stage3_param_persistence_threshold" in z) == (zero == 3)
    if zero == 3:
        assert z["stage3_param_persistence_threshold"] == 123


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_precision_flags(precision):
    """Exactly the chosen half precision is enabled (none for fp32)."""
    cfg = ds(precision=precision)
    assert cfg["bf16"]["enabled"] == (precision == "bf16")
    assert cfg["fp16"]["enabled"] == (precision == "fp16")


def test_offload_entries():
    """Offload flags become cpu offload entries; without them there are none."""
    plain = ds(zero_stage=3)["zero_optimization"]
    assert "offload_optimizer" not in plain and "offload_param" not in plain
    cfg = ds(zero_stage=3, offload_optimizer=True, offload_param=True, optimizer_impl="torch")
    z = cfg["zero_optimization"]
    assert z["offload_optimizer"]["device"] == "cpu"
    assert z["offload_param"]["device"] == "cpu"
    assert cfg["zero_force_ds_cpu_optimizer"] is False


def test_optimizer_params_and_impl():
    """AdamW gets the optim values; torch_adam follows optimizer_impl (auto = torch on CPU)."""
    cfg = ds(optim=OptimConfig(lr=3e-4, betas=[0.8, 0.95], eps=1e-6, weight_decay=0.01), grad_clip=0.5)
    p = cfg["optimizer"]["params"]
    assert cfg["optimizer"]["type"] == "AdamW"
    assert (p["lr"], p["betas"], p["eps"], p["weight_decay"]) == (3e-4, [0.8, 0.95], 1e-6, 0.01)
    assert cfg["gradient_clipping"] == 0.5
    assert p["torch_adam"] is (not torch.cuda.is_available())
    assert ds(optimizer_impl="torch")["optimizer"]["params"]["torch_adam"] is True
    assert ds(optimizer_impl="fused")["optimizer"]["params"]["torch_adam"] is False


def test_extra_is_merged_deeply():
    """engine.extra adds and overrides nested keys without dropping their siblings."""
    extra = {"zero_optimization": {"reduce_bucket_size": 1000}, "bf16": {"enabled": True},
             "optimizer": {"params": {"lr": 5.0}}, "flops_profiler": {"enabled": False}}
    cfg = ds(zero_stage=2, extra=extra)
    assert cfg["zero_optimization"] == {"stage": 2, "reduce_bucket_size": 1000}
    assert cfg["bf16"] == {"enabled": True}
    assert cfg["optimizer"]["params"]["lr"] == 5.0
    assert cfg["optimizer"]["params"]["eps"] == 1e-8  # sibling kept
    assert cfg["flops_profiler"] == {"enabled": False}


def test_extra_as_plain_dict():
    """A plain-dict engine config (not a DictConfig) works too."""
    engine = OmegaConf.to_container(OmegaConf.structured(EngineConfig(extra={"a": {"b": 1}})))
    cfg = build_ds_config(OmegaConf.create(engine), OmegaConf.structured(OptimConfig()), 1)
    assert cfg["a"] == {"b": 1}


# ---------------------------------------------------------------- stages


class StagedToy(Toy):
    """Toy with the schema's group names, as stages address them."""

    def module_groups(self) -> dict[str, nn.Module]:
        return {"vision_tower": self.enc, "heads": self.head}


def test_apply_stage_freezes_and_sets_lrs():
    """A frozen group stops requiring grad; other groups train at their own or the base lr."""
    m = StagedToy()
    lrs = apply_stage(m, stage(vision_tower={"mode": "frozen"}), base_lr=1e-3)
    assert lrs == {"heads": 1e-3}
    assert not any(p.requires_grad for p in m.enc.parameters())
    assert all(p.requires_grad for p in m.head.parameters())
    lrs = apply_stage(m, stage(vision_tower={"mode": "full", "lr": 5e-5}), base_lr=1e-3)
    assert lrs == {"vision_tower": 5e-5, "heads": 1e-3}
    assert all(p.requires_grad for p in m.parameters())  # unfreezing works too


def test_apply_stage_then_param_groups():
    """The lrs apply_stage returns feed param_groups for exactly the trainable groups."""
    m = StagedToy()
    lrs = apply_stage(m, stage(heads={"mode": "frozen"}), base_lr=2e-4)
    groups = param_groups(m.module_groups(), lrs, weight_decay=0.1)
    assert {g["name"] for g in groups} == {"vision_tower.decay", "vision_tower.no_decay"}
    assert {g["lr"] for g in groups} == {2e-4}


def test_group_the_model_lacks_is_ignored_with_a_log_line(caplog):
    """A stage may set a group this model lacks (a head, say): it is ignored, and the log says so."""
    with caplog.at_level("INFO", logger="vita"):
        lrs = apply_stage(StagedToy(), stage(audio_encoder={"mode": "full", "lr": 1e-4}), base_lr=1e-3)
    assert lrs == {"vision_tower": 1e-3, "heads": 1e-3}
    assert "audio_encoder, which this model lacks (its groups: vision_tower, heads)" in caplog.text


def test_lora_stays_inside_its_group():
    """LoRA on ``head`` wraps head's linear layers only; enc's same-named layer is untouched and frozen."""
    m = StagedToy()
    # give enc a layer with the same name as head's, so a leaking target would wrap it
    m.enc.add_module("proj", nn.Linear(8, 8))
    lora = {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["proj"]}
    lrs = apply_stage(m, stage(vision_tower={"mode": "frozen"}, heads={"mode": "lora", "lr": 1e-4, "lora": lora}), base_lr=1e-3)
    assert lrs == {"heads": 1e-4}
    assert m.lora_wrapped == {"heads": ["proj"]}
    assert not hasattr(m.enc.proj, "lora_A")
    trainable = sorted(n for n, p in m.named_parameters() if p.requires_grad)
    assert trainable == ["head.proj.lora_A.default.weight", "head.proj.lora_B.default.weight"]


def test_lora_target_matching_nothing_names_the_layers():
    with pytest.raises(ConfigError, match=r"matches nothing in 'heads'.*proj"):
        apply_stage(StagedToy(), stage(heads={"mode": "lora", "lora": {"target_modules": ["q_proj"]}}), base_lr=1e-3)


def test_trainable_table_lists_each_group():
    """The table has a row per group with trainable/total counts and lr or 'frozen'."""
    m = StagedToy()
    lrs = apply_stage(m, stage(vision_tower={"mode": "frozen"}), base_lr=1e-3)
    lines = trainable_table(m, lrs).splitlines()
    assert lines[0].split() == ["group", "mode", "trainable", "total", "lr"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    n_enc = sum(p.numel() for p in m.enc.parameters())
    n_head = sum(p.numel() for p in m.head.parameters())
    assert rows == {"vision_tower": ["frozen", "0", str(n_enc), "-"], "heads": ["full", str(n_head), str(n_head), "1.00e-03"]}
