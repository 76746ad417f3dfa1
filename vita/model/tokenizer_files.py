"""Tokenizer files that both the current transformers and VITA's pinned stack read.

transformers 5 saves ``tokenizer_config.json`` with ``"tokenizer_class": "TokenizersBackend"`` (a
name transformers 4.x does not know: ``AutoTokenizer`` raises) and ``tokenizer.json`` with BPE
merges as ``["a", "b"]`` pairs (tokenizers before 0.20 parse only ``"a b"`` strings). VITA's own
code pins transformers 4.4x / tokenizers 0.19, so every vita export goes through
:func:`save_tokenizer`: the same tokenizer, written in the older spelling that both read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("vita")

GENERIC = {"TokenizersBackend", "PreTrainedTokenizerFast"}
"""transformers 5's generic fast tokenizer; transformers 4 calls it ``PreTrainedTokenizerFast``."""


def legacy_class(name: str | None) -> str:
    """A ``tokenizer_class`` transformers 4 knows for the transformers 5 class ``name``.

    ``Qwen2Tokenizer`` -> ``Qwen2TokenizerFast`` (v5 keeps the v4 ``*Fast`` names as aliases, so one that
    exists there existed before); the generic backend, or a class with no ``Fast`` twin, ->
    ``PreTrainedTokenizerFast`` (reads ``tokenizer.json`` as it is).
    """
    import transformers

    if not name or name in GENERIC:
        return "PreTrainedTokenizerFast"
    if name.endswith("Fast"):
        return name
    return f"{name}Fast" if hasattr(transformers, f"{name}Fast") else "PreTrainedTokenizerFast"


def string_merges(tokenizer_json: dict) -> bool:
    """Rewrite a BPE model's ``[["a", "b"], ...]`` merges as ``["a b", ...]`` in place; False when a merge
    holds a space (only the pair form can say it: left as is)."""
    model = tokenizer_json.get("model") or {}
    merges = model.get("merges")
    if model.get("type") != "BPE" or not merges or isinstance(merges[0], str):
        return True
    if any(" " in part for pair in merges for part in pair):
        return False
    model["merges"] = [" ".join(pair) for pair in merges]
    return True


def make_portable(folder: str | Path) -> None:
    """Rewrite ``folder``'s ``tokenizer_config.json`` / ``tokenizer.json`` in the spelling transformers 4 reads."""
    folder = Path(folder)
    cfg_file, tok_file = folder / "tokenizer_config.json", folder / "tokenizer.json"
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        cfg["tokenizer_class"] = legacy_class(cfg.get("tokenizer_class"))
        extra = cfg.get("extra_special_tokens")
        if isinstance(extra, list) and "additional_special_tokens" not in cfg:
            cfg["additional_special_tokens"] = list(extra)  # transformers 4's name for them
        cfg_file.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    if tok_file.is_file():
        tok = json.loads(tok_file.read_text())
        if not string_merges(tok):
            log.warning("%s: a BPE merge holds a space, so the merges stay pairs (tokenizers < 0.20 cannot read them)",
                        tok_file)
        tok_file.write_text(json.dumps(tok, ensure_ascii=False))


def save_tokenizer(tokenizer, out: str | Path) -> None:
    """``tokenizer.save_pretrained(out)``, then :func:`make_portable`."""
    tokenizer.save_pretrained(str(out))
    make_portable(out)
