"""Spoken-answer test sets for stage 3.2 (tests/test_stage32.py): a few flite answers, their JSONL and a mel_rvq
codec fitted on them, written under a folder; and the overrides that train a tiny speaking model on them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

QUESTIONS = ["What do you say?", "Tell me something.", "Answer me.", "Speak, please."]


def write_answers(root: Path, answers: list[str], *, text_only: int = 0, voice: str = "slt",
                  codec_options: dict | None = None) -> dict:
    """``root/answers/<i>.wav`` (flite ``voice``), ``root/answers.jsonl`` (one conversation per answer: a question,
    the answer with its ``speech``; the first ``text_only`` of them without speech) and ``root/codec`` (a
    ``mel_rvq`` fitted on the answers). Returns ``{"jsonl", "audio_root", "codec", "answers"}``."""
    from vita.data.speak import flite_speech
    from vita.model.speech.mel_rvq import fit_mel_rvq

    (root / "answers").mkdir(parents=True, exist_ok=True)
    waves, rows = [], []
    for i, text in enumerate(answers):
        wave, rate = flite_speech(text, voice)
        sf.write(root / "answers" / f"{i}.wav", np.asarray(wave, dtype=np.float32), rate)
        waves.append((torch.from_numpy(np.asarray(wave, dtype=np.float32)), rate))
        answer = {"from": "gpt", "value": text}
        if i >= text_only:
            answer["speech"] = f"answers/{i}.wav"
        rows.append({"id": f"answer-{i}", "conversations": [
            {"from": "human", "value": QUESTIONS[i % len(QUESTIONS)]}, answer]})
    (root / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fit_mel_rvq(waves, **(codec_options or {})).save(root / "codec")
    return {"jsonl": root / "answers.jsonl", "audio_root": root, "codec": root / "codec", "answers": answers}


def data_overrides(data: dict) -> list[str]:
    """``data.datasets`` = the answers set alone (vita's JSONL format, over any base data config)."""
    return ["data.format=vita", f"data.datasets=[{{name: answers, annotations: ['{data['jsonl']}'], audio_root: '{data['audio_root']}'}}]"]


def speech_overrides(data: dict, decoder: str = "nar_ar-tiny", max_seconds: float = 4.0) -> list[str]:
    """A speaking model: the fitted codec of ``data`` and ``decoder``."""
    return ["model.speech.codec=mel_rvq", f"model.speech.codec_path={data['codec']}", f"model.speech.decoder={decoder}",
            f"model.speech.max_seconds={max_seconds}"]
