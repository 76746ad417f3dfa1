"""``python -m vita.model.summary``: meta-device parameter counts vs the published sizes."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import PY, ROOT, vita_env
from vita.model.summary import compose_model, summarize

# vita-1.5.md: Qwen2.5-7B ~7.62 B, InternViT ~304 M, mlp2x_gelu ~27.5 M, audio encoder ~358 M, adapter ~17.8 M.
VITA15 = {"llm": 7.62e9, "vision_tower": 304e6, "vision_projector": 27.5e6, "audio_encoder": 358e6,
          "audio_projector": 17.8e6}


def test_vita15_components_within_one_percent():
    counts = summarize(compose_model(["model=vita15_qwen2p5_7b"]).model)
    for key, ref in VITA15.items():
        assert abs(counts[key] - ref) / ref < 0.01, (key, counts[key], ref)
    assert counts["total"] == sum(counts[k] for k in VITA15)


@pytest.mark.parametrize("name,llm", [("vita10_mixtral_8x7b", 46.7e9), ("vita_nemo_12b", 12.25e9),
                                      ("vita15_fo_qwen2p5_7b", 7.62e9)])
def test_other_configs_llm_sizes(name, llm):
    counts = summarize(compose_model([f"model={name}"]).model)
    assert abs(counts["llm"] - llm) / llm < 0.01, counts
    if "fo" in name:
        assert counts["heads"] == 3584 * 3 + 3
        assert counts["audio_encoder"] == VITA15_AUDIO + 25 * 3584


VITA15_AUDIO = 357_950_464


def test_summary_cli_prints_the_table():
    proc = subprocess.run([PY, "-m", "vita.model.summary", "model=vita15_qwen2p5_7b"], cwd=ROOT, env=vita_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "vision projector        27,532,288" in proc.stdout
    assert "audio encoder          357,950,464" in proc.stdout


MODEL_CONFIGS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_every_model_config_composes_and_validates(name):
    """Each conf/model/*.yaml composes against the schema and names registered components."""
    from vita.config import validate

    validate(compose_model([f"model={name}"]))


def test_unknown_tower_is_caught_at_validation():
    from vita.config import validate
    from vita.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown vision tower 'tiny-internvi'. Did you mean 'tiny-internvit'"):
        validate(compose_model(["model=tiny_omni", "model.vision.tower=tiny-internvi"]))
    with pytest.raises(ConfigError, match="model.audio.projector.*unknown projector 'subsample'"):
        validate(compose_model(["model=tiny_omni", "model.audio.projector=subsample"]))
