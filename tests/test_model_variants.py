"""Every tiny or smol model config trains 2 steps through ``python -m vita.run``, and a QLoRA stage
runs 5 steps on SmolLM2 (the tiny-model QLoRA run is in test_lora_export.py).

The variants are found by globbing ``conf/model/`` for names holding ``tiny`` or ``smol``, so a new
one is covered without editing this file. Text-only models train on chatterbot; models with a vision
tower or an audio encoder train on the demo set without its text-only dataset, so every sample
carries real media (image, video or speech) and the encoders run on it, not on their dummy inputs:
a batch without a modality runs that encoder on a dummy x 0, which gives it a zero gradient, so
(weight decay 0) its weights move between the step-1 and step-2 checkpoints only if it saw media.
"""

from __future__ import annotations

import math

import pytest

from tests.conftest import ROOT, find_run, losses, quiet, read_json, run_vita

pytestmark = pytest.mark.slow

VARIANTS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml") if "tiny" in p.stem or "smol" in p.stem)
SMALL = ["experiment=smoke", "engine.micro_batch_size=2"]


def _compose(overrides: list[str]):
    from vita.model.summary import compose_model

    return compose_model(overrides)


def _expected_groups(model_cfg) -> list[str]:
    """The groups OmniModel.module_groups() makes from a model config, in its order."""
    groups = ["llm"]
    if model_cfg.vision.tower:
        groups += ["vision_tower", "vision_projector"]
    if model_cfg.audio.encoder:
        groups += ["audio_encoder", "audio_projector"]
    if model_cfg.state_head_classes:
        groups.append("heads")
    return groups


def _media_data() -> list[str]:
    """data=demo with every media-free dataset weighted 0 (found by name, not by position)."""
    datasets = _compose(["data=demo"]).data.datasets
    text_only = [i for i, d in enumerate(datasets) if not (d.image_root or d.video_root or d.audio_root)]
    assert text_only and len(text_only) < len(datasets), "demo.yaml should mix media and text-only datasets"
    return ["data=demo", *(f"data.datasets.{i}.ratio=0" for i in text_only)]


def _groups_moved(run_dir) -> set[str]:
    """Groups whose weights differ between the step-1 and step-2 checkpoints (ZeRO-0 model states)."""
    import torch

    ckpts = run_dir / "checkpoints"
    a, b = (torch.load(ckpts / f"step_{s:08d}" / "mp_rank_00_model_states.pt", map_location="cpu", mmap=True,
                       weights_only=False)["module"] for s in (1, 2))
    assert a.keys() == b.keys()
    return {k.split(".")[0] for k in a if not torch.equal(a[k], b[k])}


def _finite(traj: list[float], n: int) -> None:
    assert len(traj) == n and all(math.isfinite(x) for x in traj), traj


def test_variants_are_found():
    assert {"tiny_qwen2", "tiny_omni", "smol_omni", "smol_lm"} <= set(VARIANTS), VARIANTS


@pytest.mark.parametrize("model", VARIANTS)
def test_variant_trains_two_steps(model, out_root):
    model_cfg = _compose([f"model={model}"]).model
    multimodal = bool(model_cfg.vision.tower or model_cfg.audio.encoder)
    data = _media_data() if multimodal else ["data=chatterbot"]
    ckpt = ["train.ckpt_every=1"] if multimodal else []
    run_vita([*quiet(model, out_root), f"model={model}", *SMALL, *data, *ckpt, "data.limit=16", "train.max_steps=2"])
    run_dir = find_run(out_root, model)
    _finite(losses(run_dir), 2)
    meta = read_json(run_dir / "final" / "vita_export.json")
    assert meta["step"] == 2 and meta["template"] == ("qwen2.5" if multimodal else "chatml")
    assert meta["groups"] == _expected_groups(model_cfg), meta["groups"]
    for group in meta["groups"][1:]:
        assert (run_dir / "final" / f"{group}.safetensors").is_file(), group
    assert (run_dir / "final" / "config.json").is_file()
    if multimodal:  # every encoder and projector learned from real media (see the module docstring)
        moved = _groups_moved(run_dir)
        assert moved >= {{"heads": "state_head"}.get(g, g) for g in meta["groups"]}, moved


def test_qlora_on_smollm2_runs_five_steps(out_root):
    """QLoRA (4-bit nf4) + LoRA on SmolLM2-135M-Instruct loaded from its GGUF: the GGUF is dequantised
    into the run's base_model folder first (transformers cannot quantise while reading a GGUF)."""
    run_vita([*quiet("qsmol", out_root), "model=smol_lm", "stage=lora_llm", "model.quantization=4bit", *SMALL,
              "data=chatterbot", "data.template=smollm2", "data.limit=32", "train.max_steps=5"])
    run_dir = find_run(out_root, "qsmol")
    traj = losses(run_dir)
    _finite(traj, 5)
    assert traj[0] < 6.0, traj  # real weights: a random 49k-token LM starts near ln(49152) = 10.8
    final = run_dir / "final"
    adapter = read_json(final / "adapters" / "llm" / "adapter_config.json")
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 8
    assert (final / "adapters" / "llm" / "adapter_model.safetensors").is_file()
    meta = read_json(final / "vita_export.json")
    assert meta["adapters"] == {"llm": "adapters/llm"} and meta["base_model"] == str(run_dir / "base_model")
    assert (run_dir / "base_model" / "model.safetensors").is_file()
    assert not (final / "model.safetensors").exists()  # k-bit weights are not re-exported
