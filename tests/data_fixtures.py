"""Shared fixtures of the data tests: the demo tokenizer, a tiny DataSpec and the demo media set."""

from __future__ import annotations

import shutil
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
    needed = ("bad/bad.jsonl", "annotations/text.jsonl", "annotations/speech_train.jsonl",
              "annotations/cards_train.jsonl")
    if not all((root / p).is_file() for p in needed) or not (root / "video").is_dir():
        try:
            build(root)
        except MissingFixture as e:
            pytest.skip(str(e))
    elif not is_current(root):
        write_bad_corpus(root)
    from vita.data.demo_answers import is_current as answers_current
    from vita.data.demo_answers import write_spoken_answers

    if not answers_current(root):  # the spoken-answer set (speech out), added after the rest
        if not shutil.which("flite"):
            pytest.skip("flite is missing (make deps)")
        write_spoken_answers(root)
    return root


def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ASSETS / "tokenizers/chatterbot-bpe")


def omni_demo(overrides: list[str] = ()):
    """``tiny_omni`` on the demo data, composed as ``vita.run`` would: (cfg, tokenizer, model, data bundle)."""
    from vita.bench.harness import build, compose
    from vita.data import build_data
    from vita.model import ensure_media_tokens

    demo_root()
    cfg = compose(["model=tiny_omni", "data=demo", "data.num_workers=0", *overrides])
    tok, model = build(cfg)
    ensure_media_tokens(tok, model)
    return cfg, tok, model, build_data(cfg, tok, 0, 1, spec=model.data_spec())


def samples_by_kind(dataset, kinds=("image", "video", "audio", "text")) -> dict[str, dict]:
    """One loaded sample of each kind from the demo data (``video`` = frames, ``image`` = tiles, no audio)."""
    out = {}
    for i in range(len(dataset)):
        it = dataset[i]
        pix, aud = "pixel_values" in it, "audio_features" in it
        kind = "audio" if aud and not pix else "text" if not (pix or aud) else "image+audio" if pix and aud else None
        if pix and not aud:
            kind = "video" if str(it["id"]).startswith("video") else "image"
        if kind in kinds and kind not in out:
            out[kind] = it
        if len(out) == len(kinds):
            return out
    raise AssertionError(f"the demo data lacks a kind: found {sorted(out)} of {kinds}")
