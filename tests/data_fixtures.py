"""Shared fixtures of the data tests: the demo tokenizer, a tiny DataSpec and the demo media set."""

from __future__ import annotations

from pathlib import Path

import pytest

from vita.config import ASSETS, demo_data_dir

SPEECH = Path("/usr/share/pocketsphinx/test/data")


def demo_root() -> Path:
    """The demo data set, built on first use (the bad corpus rebuilt when its version changed); skips
    the test if its Debian packages are missing."""
    from vita.data.bad_corpus import is_current, write_bad_corpus
    from vita.data.demo import MissingFixture, build

    root = Path(demo_data_dir())
    needed = ("bad/bad.jsonl", "annotations/text.jsonl", "annotations/speech_train.jsonl")
    if not all((root / p).is_file() for p in needed) or not (root / "video").is_dir():
        try:
            build(root)
        except MissingFixture as e:
            pytest.skip(str(e))
    elif not is_current(root):
        write_bad_corpus(root)
    return root


def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ASSETS / "tokenizers/chatterbot-bpe")
