"""Every config composes and validates; bad keys, values and registry names give one clear line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import PY, ROOT, vita_env
from vita.config import CONF_DIR, register_configs, register_resolvers, validate
from vita.errors import ConfigError

register_configs()
register_resolvers()


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["model", "data", "stage", "engine", "experiment"])
def test_every_group_option_composes_and_validates(group):
    options = _options(group)
    assert options, f"conf/{group} is empty"
    for opt in options:
        cfg = _compose([f"{group}={opt}"])
        validate(cfg)
        assert OmegaConf.is_missing(cfg, "name") is False


def test_engine_presets_set_their_stage():
    assert {o: _compose([f"engine={o}"]).engine.zero_stage for o in _options("engine")} == {
        "zero0": 0, "zero1": 1, "zero2": 2, "zero3": 3, "zero3_offload": 3}
    off = _compose(["engine=zero3_offload"]).engine
    assert off.offload_optimizer and off.offload_param


def test_experiment_is_a_delta():
    base, smoke = _compose(["experiment=chatterbot_tiny"]), _compose(["experiment=smoke"])
    assert smoke.name == "smoke" and smoke.train.max_steps == 10 and smoke.data.limit == 64
    assert smoke.model == base.model and smoke.stage == base.stage  # what smoke leaves alone stays as it was
    assert _compose(["experiment=smoke", "model=smol_lm"]).model.backbone == "smollm2-135m"  # the command line wins


def test_schema_rejects_unknown_key_and_wrong_type_at_compose():
    with pytest.raises(Exception, match="optim.lrr"):
        _compose(["optim.lrr=1"])
    with pytest.raises(Exception, match="optim.lr"):
        _compose(["optim.lr=abc"])


@pytest.mark.parametrize("key,bad", [
    ("engine.precision", "fp8"), ("optim.scheduler", "step"), ("train.resume", "sometimes"),
    ("data.sampler", "shuffled"), ("model.backbone", "tiny-qwen3"), ("data.template", "chatmll")])
def test_validate_names_key_and_options(key, bad):
    cfg = _compose([f"{key}={bad}"])
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    msg = str(e.value)
    assert bad in msg and "\n" not in msg
    assert key in msg or "Known" in msg


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "vita.run", *args, "output_root=/tmp/vita-never-used"], cwd=ROOT,
                          env=vita_env(), capture_output=True, text=True, timeout=300)


def _error_lines(proc) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]


@pytest.mark.parametrize("args,must", [
    (["optim.lrr=1"], ["'optim.lrr'", "'optim.lr'", "Valid keys under 'optim'", "warmup_steps"]),
    (["train.max_stepz=3"], ["'train.max_stepz'", "'train.max_steps'"]),
    (["optim.lr=abc"], ["'optim.lr'", "abc", "Float"]),
    (["engine=zero9"], ["engine 'zero9'", "zero3_offload"]),
    (["model.backbone=tiny-qwen3"], ["'tiny-qwen3'", "Did you mean 'tiny-qwen2'", "Known backbones"]),
    (["model.overrides.hidden_size=32"], ["'+model.overrides.hidden_size=32'"]),
    (["stage.groups.llm.mode=loraa"], ["'stage.groups.llm.mode'", "full, frozen, lora"]),
])
def test_cli_errors_are_one_line(args, must):
    proc = _cli(*args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = _error_lines(proc)
    assert len(lines) == 1, proc.stderr
    for m in must:
        assert m in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert lines[0].removeprefix("error: ") not in proc.stdout, proc.stdout[-2000:]  # said once, not logged too
    run_dir = Path("/tmp/vita-never-used/demo") / args[0].replace("=", ":")
    assert not run_dir.exists(), f"{run_dir} left behind: {list(run_dir.rglob('*'))}"  # no empty run dir


def test_cfg_job_prints_composed_config():
    proc = subprocess.run([PY, "-m", "vita.run", "--cfg", "job", "experiment=smoke", "optim.lr=2e-4"], cwd=ROOT,
                          env=vita_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    cfg = OmegaConf.create(proc.stdout)
    assert cfg.model.backbone == "tiny-qwen2" and cfg.optim.lr == 2e-4 and cfg.name == "smoke"


def test_shipped_yaml_have_a_launch_line():
    for path in Path(CONF_DIR).rglob("*.yaml"):
        if path.parent.name == "local" and path.name.startswith("pytest_"):
            continue  # written for a moment by tests/test_config_dirs.py (another xdist worker)
        assert "vita.run" in path.read_text() or path.parent.name == "local" and "cp " in path.read_text(), path


def test_a_slash_in_an_override_value_makes_one_run_dir_folder():
    """``model.tokenizer=/some/dir`` must not nest the run dir in folders named after the path's parts."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from vita.config import CONF_DIR, register_configs, register_resolvers

    register_configs()
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["output_root=/out", "name=n", "model.tokenizer=/data/tok/v1",
                                           "optim.lr=1e-4"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    HydraConfig.instance().set_config(cfg)
    assert cfg.hydra.run.dir == "/out/n/model.tokenizer:%2Fdata%2Ftok%2Fv1+optim.lr:1e-4"
    assert cfg.hydra.sweep.subdir == "model.tokenizer:%2Fdata%2Ftok%2Fv1+optim.lr:1e-4"


def test_a_run_dir_name_too_long_for_a_folder_keeps_its_start_and_a_hash():
    from vita.config import MAX_DIRNAME, flat_dirname

    long = "data.shards:[{url:'http://host/" + "x" * 300 + "'}]+optim.lr:1e-4"
    name = flat_dirname(long)
    assert len(name.encode()) <= MAX_DIRNAME and "/" not in name and name.startswith("data.shards:[{url:'http:%2F")
    assert flat_dirname(long) == name != flat_dirname(long.replace("1e-4", "2e-4"))  # stable, and per config
    assert flat_dirname("optim.lr:1e-4") == "optim.lr:1e-4"
