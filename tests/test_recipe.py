"""Stages chained by a recipe, and stage.init_from from exports, checkpoints and plain HF folders."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import load_final, losses, quiet, run_vita

pytestmark = pytest.mark.slow


def test_recipe_chains_stages_and_skips_completed_ones(out_root):
    args = [*quiet("r", out_root), "experiment=tiny_recipe", "name=r"]
    run_vita(args)
    first, second = out_root / "r" / "1_pretrain", out_root / "r" / "2_lora"
    a, b = load_final(first), load_final(second)
    # stage 2 trained LoRA only: its exported base weights are exactly stage 1's output
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (second / "final" / "adapters" / "llm" / "adapter_model.safetensors").is_file()
    # and it started where stage 1 ended, not from scratch
    assert losses(second)[0] < losses(first)[0] - 0.2

    mtime = (second / "metrics.jsonl").stat().st_mtime_ns
    proc = run_vita(args)
    assert proc.stdout.count("already complete") == 2
    assert (second / "metrics.jsonl").stat().st_mtime_ns == mtime


def test_recipe_failure_names_the_step(out_root):
    proc = run_vita([*quiet("bad", out_root), "experiment=tiny_recipe", "name=bad",
                     "recipe.1.overrides=['+model.overrides.hidden_size=48']"], check=False)
    assert proc.returncode == 2
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "step 2/2 'lora'" in err[0] and "does not fit this model" in err[0], proc.stderr


def test_init_from_plain_hf_folder_and_mismatch(out_root, tmp_path):
    from transformers import AutoModelForCausalLM

    from vita.model.backbones import TINY_QWEN2
    from vita.registry import BACKBONES

    def tiny_qwen2(**kw):
        return BACKBONES.build("tiny-qwen2", **kw)

    torch.manual_seed(3)
    hf = tmp_path / "plain"
    AutoModelForCausalLM.from_config(tiny_qwen2()).save_pretrained(hf)
    args = [*quiet("plain", out_root), "experiment=smoke", "data.limit=32", "train.max_steps=2",
            f"stage.init_from={hf}", "stage.groups.llm.mode=frozen"]
    # a frozen LLM with nothing else to train is refused; LoRA keeps the base as loaded
    args[-1] = "stage=lora_llm"
    run_vita(args)
    ref = AutoModelForCausalLM.from_pretrained(hf).state_dict()
    out = load_final(next((out_root / "plain").rglob("final")).parent)
    assert torch.equal(out["model.embed_tokens.weight"], ref["model.embed_tokens.weight"])

    wide = tmp_path / "wide"
    AutoModelForCausalLM.from_config(tiny_qwen2(hidden_size=TINY_QWEN2["hidden_size"] * 2)).save_pretrained(wide)
    proc = run_vita([*quiet("wide", out_root), "experiment=smoke", f"stage.init_from={wide}"], check=False)
    assert proc.returncode == 2 and "does not fit this model" in proc.stderr and "wrong shapes" in proc.stderr
