"""Card calls ("seven of hearts"), the demo's speech task: a closed vocabulary that minutes of CPU can teach.

``python -m vita.data.demo`` writes them under ``cards/`` of the demo set, with three annotation files:

* ``cards_train.jsonl``: card calls in the grammar of the pocketsphinx card recordings (one card, two or
  three cards, "rank card", "rank rank"), spoken by the Debian ``flite`` voices of :data:`VOICES`; the
  rank/suit combinations of :data:`HELD_OUT_CARDS` never occur in them;
* ``cards_heldout.jsonl``: each held-out combination spoken by each voice (combinations never trained on);
* ``cards_human.jsonl``: the real human recordings of Debian ``pocketsphinx-testdata`` (``cards/00[1-5].wav``
  under ``speech/``, a voice never trained on).

Everything is deterministic (fixed lists, a seeded draw, flite's fixed voices), so every machine writes
the same clips.
"""

from __future__ import annotations

import random
from pathlib import Path

RANKS = ("ace", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "jack", "queen", "king")
SUITS = ("clubs", "diamonds", "hearts", "spades")
VOICES = ("slt", "rms", "awb", "kal16")
"""The flite voices that speak the synthetic clips (female US, male US, male Scottish, male US diphone)."""
HELD_OUT_CARDS = (("ace", "diamonds"), ("two", "spades"), ("three", "hearts"), ("six", "clubs"),
                  ("nine", "diamonds"), ("jack", "hearts"), ("queen", "spades"), ("king", "clubs"))
"""Rank/suit pairs kept out of every training utterance: each rank and suit word is trained, the pair never."""
HUMAN_ROOT = Path("/usr/share/pocketsphinx/test/data/cards")
SEQUENCES = 48
"""Multi-card training utterances (two or three cards, "rank card", "rank rank"), drawn with a fixed seed."""
VERSION = 1
"""Bumped when the texts or voices change: the clips are rewritten."""


def card(rank: str, suit: str) -> str:
    return f"{rank} of {suit}"


def train_cards() -> list[tuple[str, str]]:
    """The 44 rank/suit pairs that training utterances use."""
    return [(r, s) for r in RANKS for s in SUITS if (r, s) not in HELD_OUT_CARDS]


def train_texts() -> list[str]:
    """Every training text: each trained card alone, then :data:`SEQUENCES` multi-card utterances."""
    pairs = train_cards()
    rng = random.Random(0)
    texts = [card(*p) for p in pairs]
    for k in range(SEQUENCES):
        kind = k % 4
        if kind == 0:
            texts.append(" ".join(card(*rng.choice(pairs)) for _ in range(2)))
        elif kind == 1:
            texts.append(" ".join(card(*rng.choice(pairs)) for _ in range(3)))
        elif kind == 2:
            texts.append(f"{rng.choice(RANKS)} {card(*rng.choice(pairs))}")
        else:
            texts.append(f"{rng.choice(RANKS)} {rng.choice(RANKS)}")
    return texts


def _record(rid: str, audio: str, text: str) -> dict:
    return {"id": rid, "audio": audio,
            "conversations": [{"from": "human", "value": "<audio>\nTranscribe the speech."},
                              {"from": "gpt", "value": text.capitalize() + "."}]}


def _speak(out: Path, text: str, voice: str) -> None:
    import soundfile as sf

    from vita.data.speak import flite_speech

    if out.is_file():
        return
    wave, rate = flite_speech(text, voice)
    tmp = out.with_suffix(".part.wav")
    sf.write(str(tmp), wave, rate, subtype="PCM_16")
    tmp.replace(out)


def synthetic_records(root: Path, texts: list[str], split: str) -> list[dict]:
    """``texts`` spoken by every voice of :data:`VOICES` into ``root/cards/<split>/``."""
    recs = []
    for i, text in enumerate(texts):
        for voice in VOICES:
            rel = f"{split}/v{VERSION}-{i:03d}-{voice}.wav"
            (root / "cards" / split).mkdir(parents=True, exist_ok=True)
            _speak(root / "cards" / rel, text, voice)
            recs.append(_record(f"cards-{split}-{i:03d}-{voice}", rel, text))
    return recs


def human_records(root: Path) -> list[dict]:
    """The pocketsphinx card recordings with their transcripts, relative to ``root/speech`` (the link to
    pocketsphinx's test data that :func:`vita.data.demo.speech_records` makes too)."""
    from vita.data.demo import SPEECH_ROOT, _link, _need, _transcripts

    _need(HUMAN_ROOT.is_dir(), f"{HUMAN_ROOT} is missing: apt-get install pocketsphinx-testdata")
    _link(root / "speech", SPEECH_ROOT)
    return [_record(f"cards-human-{fid}", f"cards/{fid}.wav", text)
            for fid, text in sorted(_transcripts(HUMAN_ROOT / "cards.transcription").items())
            if (HUMAN_ROOT / f"{fid}.wav").is_file()]


def write_cards(root: Path) -> None:
    """``cards_train.jsonl``, ``cards_heldout.jsonl`` and ``cards_human.jsonl`` under ``root/annotations``."""
    import shutil

    from vita.data.demo import _need, _write_jsonl

    _need(bool(shutil.which("flite")), "flite is missing: apt-get install flite")
    ann = root / "annotations"
    _write_jsonl(ann / "cards_train.jsonl", synthetic_records(root, train_texts(), "train"))
    _write_jsonl(ann / "cards_heldout.jsonl", synthetic_records(root, [card(*p) for p in HELD_OUT_CARDS], "heldout"))
    _write_jsonl(ann / "cards_human.jsonl", human_records(root))
