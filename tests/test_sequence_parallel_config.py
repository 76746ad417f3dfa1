"""engine.sequence_parallel at compose time: the long-video configs, and one clear error for what N cannot split."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from vita.config import CONF_DIR, register_configs, register_resolvers, validate
from vita.errors import ConfigError

register_configs()
register_resolvers()


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def test_long_video_configs_compose():
    big = _compose(["experiment=stage2_long_video"])
    validate(big)
    assert (big.engine.sequence_parallel, big.engine.zero_stage, big.model.backbone) == (4, 3, "qwen2.5-7b")
    assert big.engine.gradient_checkpointing and big.engine.tiled_mlp > 0 and big.engine.fused_loss == "chunked"
    tiny = _compose(["experiment=tiny_long_video"])
    validate(tiny)
    assert tiny.engine.sequence_parallel == 2 and tiny.engine.zero_stage == 3


def test_heads_not_divisible_refused():
    """Qwen2.5-7B's 28 query heads: Ulysses cannot split them 8 ways."""
    with pytest.raises(ConfigError, match=r"sequence_parallel=8 does not divide the 28 attention heads"):
        validate(_compose(["experiment=stage2_long_video", "engine.sequence_parallel=8"]))


def test_world_not_divisible_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "6")
    with pytest.raises(ConfigError, match=r"sequence_parallel=4 does not divide the world size 6"):
        validate(_compose(["experiment=stage2_long_video"]))
    monkeypatch.setenv("WORLD_SIZE", "8")
    validate(_compose(["experiment=stage2_long_video"]))


def test_sp_needs_sdpa_and_dense():
    with pytest.raises(ConfigError, match="attn_implementation=sdpa"):
        validate(_compose(["experiment=tiny_long_video", "model.attn_implementation=eager"]))
    with pytest.raises(ConfigError, match="dense LLMs"):
        validate(_compose(["experiment=tiny_long_video", "model.backbone=tiny-mixtral"]))
