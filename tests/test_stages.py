"""VITA-1.5's stages as config: what each trains, LoRA confinement on the omni model, the recipe."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.conftest import quiet, run_vita
from vita.config import CONF_DIR, register_configs, register_resolvers
from vita.model.builder import build_model
from vita.stage import apply_stage

register_configs()
register_resolvers()
M = 1e6
# vita-1.5.md §7.2 / §11.1: trainable parts per stage, and the component sizes.
SIZES = {"llm": 7615.6 * M, "vision_tower": 304.0 * M, "vision_projector": 27.5 * M, "audio_encoder": 358.0 * M,
         "audio_projector": 17.8 * M}
TRAINS = {
    "stage1_1_vision_align": {"vision_projector": 5e-4},
    "stage1_2_vision_sft": {"llm": 2e-5, "vision_tower": 2e-6, "vision_projector": 2e-5},
    "stage1_3_vision_task": {"llm": 2e-5, "vision_projector": 2e-5},
    "stage2_1_audio_align": {"audio_projector": 5e-4},
    "stage2_2_audio_sft": {"llm": 1e-5, "vision_projector": 1e-5, "audio_projector": 1e-5},
    "stage1": {"vision_projector": 5e-4},
    "stage2": {"audio_projector": 5e-4},
    "stage3": {"llm": 1e-5},
}


def _cfg(overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        # the former default underneath: the demo experiment (the default) sets stage.groups of its own
        return compose("config", overrides=["experiment=chatterbot_tiny", *overrides])


@pytest.fixture(scope="module")
def vita15_meta():
    cfg = _cfg(["model=vita15_qwen2p5_7b", "model.pretrained=null", "model.vision.pretrained=null",
                "model.audio.pretrained=null"])
    with torch.device("meta"):
        return build_model(cfg.model)


@pytest.mark.parametrize("stage", sorted(TRAINS))
def test_stage_trains_what_vita_trains(vita15_meta, stage):
    cfg = _cfg([f"stage={stage}"])
    lrs = apply_stage(vita15_meta, cfg.stage, cfg.optim.lr)
    assert lrs == TRAINS[stage]
    for group, module in vita15_meta.module_groups().items():
        n = sum(p.numel() for p in module.parameters() if p.requires_grad)
        if group in TRAINS[stage]:
            assert abs(n - SIZES[group]) / SIZES[group] < 0.01, (group, n)
        else:
            assert n == 0, (stage, group, n)


def test_lora_on_one_group_of_the_omni_model_stays_there():
    """all-linear LoRA on the audio encoder wraps its layers only; the LLM and the vision side stay plain."""
    cfg = _cfg(["model=tiny_omni", "stage=full", "stage.groups.audio_encoder.mode=lora",
                "stage.groups.audio_encoder.lora.target_modules=[all-linear]", "stage.groups.llm.mode=frozen"])
    model = build_model(cfg.model, vocab_size=1024)
    apply_stage(model, cfg.stage, 1e-3)
    wrapped = sorted(n for n, m in model.named_modules() if hasattr(m, "lora_A"))
    assert wrapped and all(n.startswith("audio_encoder.") for n in wrapped), wrapped
    assert sorted(f"audio_encoder.{n}" for n in model.lora_wrapped["audio_encoder"]) == wrapped
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"audio_encoder", "vision_tower", "vision_projector", "audio_projector"}
    assert not any(p.requires_grad for n, p in model.audio_encoder.named_parameters() if "lora_" not in n)


@pytest.mark.slow
def test_tiny_omni_recipe_hands_the_vision_projector_on(out_root):
    from safetensors.torch import load_file

    run_vita([*quiet("omni", out_root), "experiment=tiny_omni_recipe", "name=omni"])
    first, second = out_root / "omni" / "1_vision_align" / "final", out_root / "omni" / "2_audio_align" / "final"
    assert sorted(p.name for p in first.glob("*.safetensors")) == ["vision_projector.safetensors"]  # trainable only
    a, b = load_file(str(first / "vision_projector.safetensors")), load_file(str(second / "vision_projector.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # frozen in stage 2, from stage 1
    proc = run_vita([*quiet("omni", out_root), "experiment=tiny_omni_recipe", "name=omni"])
    assert proc.stdout.count("already complete") == 2


def test_vita15_recipe_steps_compose_with_their_stage_and_data():
    from vita.config import validate
    from vita.recipe import step_overrides

    cfg = _cfg(["experiment=vita15_recipe"])
    seen = []
    for step in cfg.recipe:
        step_cfg = _cfg(step_overrides(["experiment=vita15_recipe"], step))
        validate(step_cfg)
        assert not step_cfg.recipe and step_cfg.model.backbone == "qwen2.5-7b"
        seen.append((step_cfg.stage.name, step_cfg.data.name))
    assert seen == [("stage1_1_vision_align", "vita15_stage1_vision"), ("stage1_2_vision_sft", "vita15_stage1_vision"),
                    ("stage1_3_vision_task", "vita15_stage1_vision"), ("stage2_1_audio_align", "vita15_stage2_audio"),
                    ("stage2_2_audio_sft", "vita15_stage2_audio"), ("stage3_1_codec", "vita15_stage3_speech"),
                    ("stage3_2_speech_decoder", "vita15_stage3_speech")]
    assert step_cfg.model.speech.decoder == "vita15" and step_cfg.model.speech.codec == "mel_rvq"  # the last step speaks
