"""LoRA and QLoRA through the engine, PEFT-format exports, and `python -m vita.export` merging.

Tolerances: logits compared in fp32 to 1e-5 (export round trips are exact copies; merging
adds B@A into W, which reorders float sums).
"""

from __future__ import annotations

import subprocess

import pytest
import torch

from tests.conftest import PY, ROOT, find_run, losses, quiet, read_json, run_vita, vita_env

pytestmark = pytest.mark.slow
LORA = ["experiment=smoke", "data.limit=64", "train.max_steps=6", "optim.lr=2e-2", "stage.groups.llm.mode=lora",
        "stage.groups.llm.lora.r=4", "stage.groups.llm.lora.dropout=0.0"]


def _batch(tok):
    text = "<|im_start|>user\nHello, how are you?<|im_end|>\n<|im_start|>assistant\nI am fine.<|im_end|>"
    return tok(text, return_tensors="pt").input_ids


def _logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    run_vita([*quiet("lora", root), *LORA, "engine=zero3", "engine.stage3_param_persistence_threshold=0"])
    return find_run(root, "lora")


def test_lora_export_is_peft_and_matches_the_checkpoint(lora_run):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from hydra import compose, initialize_config_dir
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vita.config import CONF_DIR, register_configs, register_resolvers
    from vita.model import build_model
    from vita.stage import apply_stage

    final = lora_run / "final"
    cfg_adapter = read_json(final / "adapters" / "llm" / "adapter_config.json")
    assert cfg_adapter["r"] == 4 and cfg_adapter["peft_type"] == "LORA"
    tok = AutoTokenizer.from_pretrained(final)
    ids = _batch(tok)
    base = AutoModelForCausalLM.from_pretrained(final)
    base_logits = _logits(base, ids)
    peft_logits = _logits(PeftModel.from_pretrained(base, final / "adapters" / "llm"), ids)
    assert (peft_logits - base_logits).abs().max() > 1e-3  # the adapter learned something

    # the same model rebuilt from the DeepSpeed checkpoint (ZeRO-3 partitions -> fp32)
    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=LORA)
    model = build_model(cfg.model, vocab_size=len(tok))
    apply_stage(model, cfg.stage, cfg.optim.lr)
    ckpt = lora_run / "checkpoints"
    sd = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=(ckpt / "latest").read_text().strip())
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
    assert (_logits(model.llm, ids) - peft_logits).abs().max() < 1e-5


def test_lora_init_from_a_saved_adapter(lora_run):
    """stage.groups.llm.lora.init_from loads a saved PEFT adapter into the new LoRA layers."""
    from hydra import compose, initialize_config_dir
    from safetensors.torch import load_file

    from vita.config import CONF_DIR, register_configs, register_resolvers
    from vita.model import build_model
    from vita.stage import apply_stage

    register_configs()
    register_resolvers()
    adapter = lora_run / "final" / "adapters" / "llm"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*LORA, f"stage.groups.llm.lora.init_from={adapter}"])
    model = build_model(cfg.model, vocab_size=1024)
    apply_stage(model, cfg.stage, cfg.optim.lr)
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    own = dict(model.llm.named_parameters())
    for k, v in saved.items():
        name = k.removeprefix("base_model.model.").replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")
        assert torch.equal(own[name].detach(), v), name
    assert any(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)


def test_merged_export_gives_the_unmerged_logits(lora_run, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    proc = subprocess.run([PY, "-m", "vita.export", str(lora_run / "final"), str(out)], cwd=ROOT, env=vita_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    tok = AutoTokenizer.from_pretrained(out)
    ids = _batch(tok)
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in k for k in merged.state_dict())
    unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lora_run / "final"),
                                         lora_run / "final" / "adapters" / "llm")
    assert (_logits(merged, ids) - _logits(unmerged, ids)).abs().max() < 1e-5

    # the CLI's own main() (the subprocess above covers `python -m`): a merged model is not merged again
    from vita.export import main as export_main

    capsys.readouterr()
    assert export_main([str(out), str(tmp_path / "x")]) == 2
    assert "already a full model" in capsys.readouterr().err


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_qlora_runs_five_steps_and_merges(out_root, bits, tmp_path):
    run_vita([*quiet(f"q{bits}", out_root), *LORA, "train.max_steps=5", f"model.quantization={bits}",
              "engine=zero2"])
    run_dir = find_run(out_root, f"q{bits}")
    traj = losses(run_dir)
    assert len(traj) == 5 and all(torch.isfinite(torch.tensor(traj)))
    meta = read_json(run_dir / "final" / "vita_export.json")
    assert meta["base_model"].endswith("base_model") and not (run_dir / "final" / "model.safetensors").exists()
    from vita.export import main as export_main  # the CLI's main() in this process (a fresh one costs ~8 s)

    assert export_main([str(run_dir / "final"), str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "model.safetensors").is_file()


def test_quantised_llm_cannot_train_fully(out_root):
    proc = run_vita([*quiet("qfull", out_root), "experiment=smoke", "model.quantization=4bit"], check=False)
    assert proc.returncode == 2 and "cannot train the LLM fully" in proc.stderr
