"""Generation on real SmolLM2-135M-Instruct (issue 12, acceptance 2).

``python -m vita.chat --prompt`` greedy == ``transformers`` ``generate`` greedy on the same model
and prompt, token for token; with the KV cache == without; a left-padded batch == each prompt
alone; sampling is seeded; the stop sequence ends a row and is not returned.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_real_weights import smollm2_dir  # noqa: F401  (session fixture: the dequantised HF folder)

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France?"
N = 24


def _overrides(folder) -> list[str]:
    return ["experiment=chatterbot_tiny", "model=smol_lm", f"model.pretrained={folder}", "model.gguf_file=null", "data.template=smollm2"]


@pytest.fixture(scope="module")
def loaded(smollm2_dir):  # noqa: F811
    from vita.infer import load_target

    return load_target(None, _overrides(smollm2_dir))


def _prompt(loaded, text: str) -> dict:
    from vita.infer import Conversation, conversation_prompt

    c = Conversation()
    c.add_user(text)
    return conversation_prompt(loaded.processor, c)


def test_chat_prompt_greedy_equals_transformers_generate(smollm2_dir, capsys):  # noqa: F811
    """vita.chat --prompt --json (greedy) gives exactly HF generate's tokens; the prompt is SmolLM2's own chat template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vita.chat import main

    assert main([*_overrides(smollm2_dir), "--prompt", QUESTION, "--max-new-tokens", str(N), "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    want_prompt = tok.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                          tokenize=True, return_dict=True)["input_ids"]
    assert got["prompt_ids"] == list(want_prompt)
    lm = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    end = tok.convert_tokens_to_ids("<|im_end|>")
    hf = lm.generate(torch.tensor([got["prompt_ids"]]), attention_mask=torch.ones(1, len(got["prompt_ids"]),
                     dtype=torch.long), max_new_tokens=N, do_sample=False, eos_token_id=end, pad_token_id=end)
    hf_new = hf[0, len(got["prompt_ids"]):].tolist()
    if end in hf_new:
        hf_new = hf_new[:hf_new.index(end)]
    print("vita:", got["prediction"], "| ids", got["ids"])
    assert got["ids"] == hf_new and len(hf_new) > 3
    assert "Paris" in got["prediction"]


def test_kv_cache_equals_no_cache_and_batch_equals_single(loaded):
    """The cached loop == recomputing the sequence; a left-padded batch == each prompt on its own."""
    from vita.infer import GenerationConfig, collate_prompts, generate

    items = [_prompt(loaded, QUESTION), _prompt(loaded, "Name three colours of the rainbow, please.")]
    single = [generate(loaded.model, collate_prompts([it], loaded.pad_id), GenerationConfig(max_new_tokens=N),
                       loaded.stop, loaded.pad_id)[0] for it in items]
    batch = collate_prompts(items, loaded.pad_id)
    assert batch["attention_mask"][0, 0] == 0  # the shorter prompt really is left-padded
    cached = generate(loaded.model, batch, GenerationConfig(max_new_tokens=N), loaded.stop, loaded.pad_id)
    plain = generate(loaded.model, batch, GenerationConfig(max_new_tokens=N, use_cache=False), loaded.stop,
                     loaded.pad_id)
    assert cached == plain == single
    assert all(len(r) > 3 for r in single)


def test_sampling_is_seeded_and_stops(loaded):
    """temperature/top_p sampling repeats with a seed and differs across seeds; rows stop at <|im_end|>."""
    from vita.infer import GenerationConfig, collate_prompts, generate

    batch = collate_prompts([_prompt(loaded, "Tell me a very short story.")], loaded.pad_id)

    def run(seed: int, **kw) -> list[int]:
        gen = GenerationConfig(max_new_tokens=16, temperature=1.0, top_p=0.9, seed=seed, **kw)
        return generate(loaded.model, batch, gen, loaded.stop, loaded.pad_id)[0]

    a, b, c = run(1), run(1), run(2)
    assert a == b and a != c
    end = loaded.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert [end] in loaded.stop
    short = generate(loaded.model, collate_prompts([_prompt(loaded, "Say only: yes")], loaded.pad_id),
                     GenerationConfig(max_new_tokens=40), loaded.stop, loaded.pad_id)[0]
    assert end not in short and len(short) < 40  # stopped at the end-of-turn token, which is cut
    penalised = run(1, repetition_penalty=1.5)
    assert penalised != a


def test_vita_eval_predictions_rescore_to_the_same_figures(smollm2_dir, tmp_path):  # noqa: F811
    """Real answers (SmolLM2 on demo text questions): predictions.jsonl re-scored == metrics.json, every metric."""
    from tests.data_fixtures import demo_root
    from vita.eval.__main__ import main, score_predictions
    from vita.eval.sets import eval_override

    text = demo_root() / "annotations" / "text.jsonl"
    sets = eval_override({"qa": {"annotations": [text], "metric": "[wer,cer,exact,contains]", "limit": 4,
                                 "max_new_tokens": 16}})
    assert main([*_overrides(smollm2_dir), sets, "--output", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]["qa"]
    rows = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["prediction"] for r in rows)  # real, non-empty answers
    again = score_predictions(tmp_path / "predictions.jsonl", "wer,cer,exact,contains")["qa"]
    assert again == {m: metrics[m] for m in ("samples", "wer", "cer", "exact", "contains")}
    assert 0 < metrics["wer"] and metrics["loss"] > 0 and metrics["ppl"] == pytest.approx(2.718281828 ** metrics["loss"])
