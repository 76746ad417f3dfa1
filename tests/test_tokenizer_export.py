"""Exported tokenizers read by the current transformers and by VITA's pinned stack (transformers 4.43,
tokenizers 0.19): checked as data (class name, merges) and by loading them back here."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from vita.config import ASSETS, ModelConfig

# tokenizer classes transformers 4.43 resolves by name (its tokenization_auto + the generic fast class)
KNOWN_TO_4X = {"PreTrainedTokenizerFast", "Qwen2TokenizerFast", "Qwen2Tokenizer", "LlamaTokenizerFast",
               "GPT2TokenizerFast", "LlamaTokenizer", "GPT2Tokenizer"}
TEXT = "hello there <|im_start|> world <|audio_pad|>  x, how are you?"


def _source(tmp_path, tokenizer_class: str):
    """The shipped BPE tokenizer, saved by transformers 5 under ``tokenizer_class``."""
    from transformers import AutoTokenizer

    src = tmp_path / f"src_{tokenizer_class}"
    AutoTokenizer.from_pretrained(ASSETS / "tokenizers" / "chatterbot-bpe").save_pretrained(src)
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = tokenizer_class
    (src / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = AutoTokenizer.from_pretrained(src)
    tok.save_pretrained(src)  # as transformers 5 writes it: merges as pairs, which tokenizers 0.19 cannot parse
    assert isinstance(json.loads((src / "tokenizer.json").read_text())["model"]["merges"][0], list)
    return tok


@pytest.mark.parametrize("tokenizer_class", ["TokenizersBackend", "Qwen2Tokenizer"])
def test_export_writes_a_tokenizer_transformers_4_reads(tmp_path, tokenizer_class):
    """A run's export (vita.engine.export.export_model, as final/ is written): tokenizer_config.json names a class
    transformers 4 knows, tokenizer.json's merges are "a b" strings, and it loads back to the same ids."""
    from transformers import AutoTokenizer

    from vita.engine.export import export_model
    from vita.model import build_model

    tok = _source(tmp_path, tokenizer_class)
    torch.manual_seed(0)
    model = build_model(OmegaConf.structured(ModelConfig(backbone="tiny-qwen2")), vocab_size=len(tok))
    out = export_model(model, tok, tmp_path / "final", zero_stage=0, rank=0, meta={"step": 0})
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] in KNOWN_TO_4X, cfg["tokenizer_class"]
    assert cfg["tokenizer_class"] == ("Qwen2TokenizerFast" if tokenizer_class == "Qwen2Tokenizer"
                                      else "PreTrainedTokenizerFast")
    merges = json.loads((out / "tokenizer.json").read_text())["model"]["merges"]
    assert merges and all(isinstance(m, str) and m.count(" ") == 1 for m in merges)
    back = AutoTokenizer.from_pretrained(out)
    assert back(TEXT).input_ids == tok(TEXT).input_ids
    assert back.all_special_tokens == tok.all_special_tokens and back.eos_token == tok.eos_token
    assert back.pad_token == tok.pad_token


def test_a_merge_with_a_space_stays_a_pair():
    from vita.model.tokenizer_files import string_merges

    tj = {"model": {"type": "BPE", "merges": [["a", "b"], ["c d", "e"]]}}
    assert string_merges(tj) is False and tj["model"]["merges"][1] == ["c d", "e"]
    tj = {"model": {"type": "BPE", "merges": [["a", "b"], ["Ġ", "x"]]}}
    assert string_merges(tj) is True and tj["model"]["merges"] == ["a b", "Ġ x"]
