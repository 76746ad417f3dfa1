"""``vita.infer.load_target``: a run dir (newest checkpoint), its export, a merged export and a plain HF
folder load the same weights; the target dispatch takes new kinds and names what it cannot load."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import find_run, quiet, run_vita
from vita.errors import ConfigError


def _logits(loaded, text: str = "What is AI?") -> torch.Tensor:
    from vita.infer import Conversation, collate_prompts, conversation_prompt

    c = Conversation()
    c.add_user(text)
    b = collate_prompts([conversation_prompt(loaded.processor, c)], loaded.pad_id)
    with torch.no_grad():
        return loaded.model.llm(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "outputs"
    run_vita(["experiment=chatterbot_tiny", "stage=lora_llm", "data.limit=32", "train.max_steps=3",
              "engine.micro_batch_size=4", "optim.lr=3e-2",
              *quiet("ld", out)])
    return find_run(out, "ld")


def test_run_checkpoint_export_and_merged_export_agree(lora_run, tmp_path):
    """LoRA run: the checkpoint (LoRA merged with the run's alpha/r), final/ (base + adapter) and the
    vita.export merge give the same logits, and they differ from the untrained base."""
    from vita.export import merge_lora
    from vita.infer import load_target

    from_ckpt = load_target(lora_run)
    assert from_ckpt.kind == "run" and "step_00000003" in from_ckpt.source
    from_export = load_target(lora_run / "final")
    merged = load_target(merge_lora(lora_run / "final", tmp_path / "merged"))
    hf = load_target(tmp_path / "merged", ["model.tokenizer=null"], kind="hf")
    a, b, c, d = (_logits(x) for x in (from_ckpt, from_export, merged, hf))
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5) and torch.allclose(a, d, atol=1e-5)
    base = load_target(None, ["experiment=chatterbot_tiny", "stage=lora_llm"])  # the run's starting point (same seed)
    assert not torch.allclose(a, _logits(base), atol=1e-3)
    assert from_export.processor.template.end == "<|im_end|>"


def test_omni_run_loads_encoders_from_checkpoint_and_export(tmp_path):
    """tiny_omni on the demo media: checkpoint and export hold the same trained encoders and projectors."""
    from vita.infer import load_target

    out = tmp_path / "outputs"
    run_vita(["experiment=chatterbot_tiny", "model=tiny_omni", "data=demo", "train.max_steps=2", "engine.micro_batch_size=2", *quiet("om", out)])
    run = find_run(out, "om")
    a, b = load_target(run), load_target(run / "final")
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert a.supports("image") and a.supports("audio") and a.cfg.data.template == "qwen2.5"


def test_target_dispatch_and_errors(tmp_path):
    from vita.infer import TARGET_KINDS, load_target, register_target, split_target

    assert split_target(["run", "data=demo", "data.max_tiles=2"]) == ("run", ["data=demo", "data.max_tiles=2"])
    with pytest.raises(ConfigError, match="more than one target"):
        split_target(["a", "b"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_target(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a run dir.*known kinds: .*config"):
        load_target(tmp_path / "empty")
    seen = []
    register_target("marker", lambda p: p is not None and (p / "MARKER").is_file(),
                    lambda p, ov, dt: seen.append((p, ov, dt)) or "loaded", first=True)
    try:
        (tmp_path / "empty" / "MARKER").write_text("")
        assert load_target(tmp_path / "empty", ["a=b"]) == "loaded" and seen == [(tmp_path / "empty", ["a=b"], "fp32")]
        assert next(iter(TARGET_KINDS)) == "marker"
        with pytest.raises(ConfigError, match="already registered"):
            register_target("marker", lambda p: False, lambda *a: None)
    finally:
        TARGET_KINDS.pop("marker")
    with pytest.raises(ConfigError, match="unknown model 'does_not_exist'.*Options: .*tiny_qwen2"):
        load_target(None, ["model=does_not_exist"])
