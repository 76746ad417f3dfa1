"""Every export format of every backbone family loads back into vita with the trained logits.

One short run per family (2 steps on the chatterbot data), then ``load_target`` on: the run dir (its
newest checkpoint), ``final/``, ``python -m vita.export RUN --format vita`` (VITA's layout, for the
families VITA has a model type for) and ``python -m vita.interop.convert`` of that folder. Mixtral's
experts are stored one by one in ``final/`` (transformers 5's ``save_pretrained`` writes w1/w3/w2) and
in VITA's layout; they are fused on load into transformers 5's ``gate_up_proj`` / ``down_proj``.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import live_rglob, quiet, run_vita

FAMILIES = {"qwen2": "tiny-qwen2", "qwen2-fo": "tiny-qwen2.5-fo", "mixtral": "tiny-mixtral",
            "mistral": "tiny-mistral-nemo", "llama": "tiny-llama", "smollm2": "smollm2-135m"}
SHAPE = ["+model.overrides.num_hidden_layers=2"]  # SmolLM2-135M's shapes but 2 layers (the tiny ones have 2)
VITA_LAYOUT = {"qwen2", "qwen2-fo", "mixtral", "mistral"}  # the LLMs VITA ships a model type for
IDS = torch.arange(10, 40).unsqueeze(0)  # plain token ids: every target gets the same input, whatever its template


def _logits(loaded) -> torch.Tensor:
    with torch.no_grad():
        return loaded.model.llm(input_ids=IDS).logits


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, object]:
    """The six runs, from one Hydra multirun (one process start)."""
    out = tmp_path_factory.mktemp("formats") / "outputs"
    run_vita(["-m", "experiment=chatterbot_tiny", "model.backbone=" + ",".join(FAMILIES.values()), *SHAPE,
              "data.limit=16", "train.max_steps=2", "engine.micro_batch_size=4", "optim.lr=3e-2", *quiet("fmt", out)])
    found = {p.parent for p in live_rglob(out / "fmt", "vita_config.json")}
    by_backbone = {json.loads((d / "vita_config.json").read_text())["model"]["backbone"]: d for d in found}
    assert sorted(by_backbone) == sorted(FAMILIES.values())
    return {family: by_backbone[backbone] for family, backbone in FAMILIES.items()}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_export_format_loads_back_with_the_trained_logits(family, runs, tmp_path, capsys):
    from safetensors import safe_open

    from vita.export import main as export_main
    from vita.infer import load_target
    from vita.interop.convert import convert

    run = runs[family]
    targets = {"run dir": run, "final/": run / "final"}
    rc = export_main([str(run), str(tmp_path / "vita"), "--format", "vita"])
    if family in VITA_LAYOUT:
        assert rc == 0
        targets["--format vita"] = tmp_path / "vita"
        targets["vita.interop.convert"] = convert(tmp_path / "vita", tmp_path / "converted")
    else:  # VITA has no model type for Llama: one error line, no folder
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error:") and err.count("\n") == 1 and "VITA has no model type" in err
        assert not (tmp_path / "vita").exists()
    loaded = {name: load_target(path) for name, path in targets.items()}
    assert loaded["run dir"].kind == "run" and "step_00000002" in loaded["run dir"].source
    trained = _logits(loaded["run dir"])
    untrained = _logits(load_target(None, ["experiment=chatterbot_tiny", f"model.backbone={FAMILIES[family]}", *SHAPE]))
    assert not torch.allclose(trained, untrained, atol=1e-3)  # the run moved the weights
    for name, target in loaded.items():
        assert (_logits(target) - trained).abs().max().item() <= 1e-5, name
    if family == "mixtral":
        for folder in (run / "final", tmp_path / "vita"):
            names = {k for f in folder.glob("model*.safetensors") for k in safe_open(str(f), "pt").keys()}
            assert any(".block_sparse_moe.experts.0.w1.weight" in k for k in names), folder  # per expert
            assert not any("gate_up_proj" in k for k in names), folder
        params = dict(loaded["final/"].model.llm.named_parameters())  # fused in memory (transformers 5)
        assert "model.layers.0.mlp.experts.gate_up_proj" in params
