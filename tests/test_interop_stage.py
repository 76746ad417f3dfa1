"""Continue from a VITA-1.5 folder: a 5-step LoRA stage (``stage.init_from=vita:PATH``), export back
with ``python -m vita.export RUN --format vita``, re-import, and get the trained model's logits.

Tolerance 1e-5 (fp32): the export merges LoRA as W + s * B @ A, the reference merges it through
vita's own init path; the two orders of float sums differ by rounding only.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from tests.conftest import PY, ROOT, find_run, quiet, read_json, run_vita, vita_env
from tests.interop_fixtures import make_vita_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("vita_stage")
    src = make_vita_folder(root / "release", "vita-Qwen2", seed=3)
    run_vita([*quiet("cont", root / "out"), "experiment=smoke", "data.limit=32", "train.max_steps=5",
              "optim.lr=2e-2", f"stage.init_from=vita:{src}", "stage.groups.llm.mode=lora", "stage.groups.llm.lora.r=4",
              "stage.groups.llm.lora.dropout=0.0", "stage.groups.vision_tower.mode=frozen",
              "stage.groups.audio_encoder.mode=frozen"])
    return src, find_run(root / "out", "cont")


def _text_logits(model, ids):
    with torch.no_grad():
        embeds, _ = model.embed(ids)
        return model.llm(inputs_embeds=embeds).logits


def test_lora_stage_from_vita_exports_back_and_reimports(stage_run, tmp_path):
    from omegaconf import OmegaConf

    from vita.config import ModelConfig
    from vita.interop import load_vita
    from vita.interop.exporter import read_all
    from vita.model import build_model, ensure_media_tokens
    from vita.model.init_from import load_init

    src, run = stage_run
    final = run / "final"
    meta = read_json(final / "vita_export.json")
    assert meta["model"]["backbone"] == "qwen2.5-7b" and meta["init_from"] == f"vita:{src}"
    assert (final / "adapters" / "llm" / "adapter_config.json").is_file()
    out = tmp_path / "vita_layout"
    proc = subprocess.run([PY, "-m", "vita.export", str(run), str(out), "--format", "vita", "--max-shard-size", "400KB"],
                          cwd=ROOT, env=vita_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["model_type"] == "vita-Qwen2"
    assert sorted(read_all(out)) == sorted(read_all(src))  # VITA's layout: the same keys as the release

    # the trained model, rebuilt from the run's own export (vita's init path merges the adapter)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(final)
    trained = build_model(OmegaConf.merge(OmegaConf.structured(ModelConfig), meta["model"]), vocab_size=len(tok))
    ensure_media_tokens(tok, trained)
    load_init(trained, final)
    trained.eval()
    again = load_vita(out, progress=False).model
    original = load_vita(src, progress=False).model
    ids = torch.randint(10, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    want = _text_logits(trained, ids)
    assert (_text_logits(again, ids) - want).abs().max().item() <= 1e-5
    assert (_text_logits(original, ids) - want).abs().max().item() > 1e-3  # the stage changed the model
    # the groups trained fully (projectors) came back as trained; frozen towers as released
    a, t = again.state_dict(), trained.state_dict()
    assert all(torch.allclose(a[k], t[k], atol=1e-6) for k in a if k.startswith(("vision_projector", "audio_projector")))
    released = read_all(src)
    assert torch.equal(a["vision_tower.model.encoder.layer.0.mlp.fc1.weight"],
                       released["model.vision_tower.vision_tower.encoder.layers.0.mlp.fc1.weight"])


def test_zero3_two_ranks_load_a_vita_folder(tmp_path):
    """Both ranks stream the folder into a meta-built model, ZeRO-3 partitions it; with lr 0 the gathered
    export written back in VITA's layout is bitwise the folder."""
    from vita.export import main as export_main
    from vita.interop.exporter import read_all

    src = make_vita_folder(tmp_path / "release", "vita-mixtral", seed=5)
    run_vita([*quiet("z3", tmp_path / "out"), "experiment=smoke", "data.limit=16", "engine.micro_batch_size=4", "train.max_steps=2", "optim.lr=0.0",
              "optim.warmup_steps=0", f"stage.init_from=vita:{src}", "engine=zero3",
              "engine.stage3_param_persistence_threshold=0"], world=2)
    run = find_run(tmp_path / "out", "z3")
    assert export_main([str(run), str(tmp_path / "back"), "--format", "vita"]) == 0
    a, b = read_all(src), read_all(tmp_path / "back")
    assert sorted(a) == sorted(b)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
