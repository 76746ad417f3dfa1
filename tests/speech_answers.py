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


def read_records(jsonl: Path, limit: int | None = None) -> list[dict]:
    """The first ``limit`` records of an annotation file."""
    rows = [json.loads(line) for line in Path(jsonl).read_text().splitlines() if line.strip()]
    return rows[:limit]


def speak_answers(loaded, records: list[dict]) -> list[tuple[str, torch.Tensor, int]]:
    """Each record's *reference* answer spoken by ``loaded``'s decoder on the inference path (the prompt built by
    the model's processor, the answer's tokens teacher-forced, ``vita.infer.speak.speak_rows``): ``(answer text,
    wave, rate)`` per record."""
    from vita.infer.prompt import build_prompt, collate_prompts, split_answer
    from vita.infer.speak import speak_rows

    out = []
    for raw in records:
        prompt, answer = split_answer(raw)
        batch = collate_prompts([build_prompt(loaded.processor, prompt, raw.get("id", "prompt"))], loaded.pad_id)
        ids = loaded.tokenizer(answer, add_special_tokens=False)["input_ids"]
        (spoken,) = speak_rows(loaded.model, batch, [ids], loaded.pad_id)
        out.append((answer, spoken.wave(), loaded.model.speech_codec.sample_rate))
    return out


def spoken_wer(loaded, records: list[dict], asr=None) -> tuple[float, list[str]]:
    """ASR word error rate (corpus, vita.eval.metrics.asr_wer) of :func:`speak_answers` against the answer texts, and
    the transcripts; ``asr`` defaults to the shipped Whisper tiny.en."""
    from vita.eval.asr import load_asr
    from vita.eval.metrics import asr_wer

    asr = asr or load_asr(None)
    spoken = speak_answers(loaded, records)
    transcripts = [asr(wave.numpy(), rate) if wave.numel() else "" for _, wave, rate in spoken]
    return asr_wer(transcripts, [text for text, _, _ in spoken]), transcripts


OVERFIT_STEPS = 60
OVERFIT_ANSWERS = 3


def overfit_args(root: Path, name: str = "overfit") -> tuple[list[str], list[dict]]:
    """A short ``smol_omni_speech`` stage 3.2 on the demo's first ``OVERFIT_ANSWERS`` flite answers (their own
    annotation file under ``root``, so which answers train is fixed), and those records."""
    from vita.resolvers import demo_data_dir

    src = Path(demo_data_dir("annotations/spoken_answers_train.jsonl"))
    records = read_records(src, OVERFIT_ANSWERS)
    root.mkdir(parents=True, exist_ok=True)
    jsonl = root / "answers.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    data = {"jsonl": jsonl, "audio_root": demo_data_dir("spoken_answers")}
    args = [f"name={name}", f"output_root={root}", f"hydra.run.dir={root / name}", "logging.progress_bar=false",
            "logging.plot=false", "experiment=smol_omni_speech", *data_overrides(data), "data.eval={}",
            f"engine.micro_batch_size={OVERFIT_ANSWERS}", f"train.max_steps={OVERFIT_STEPS}", "train.ckpt_every=0",
            "optim.warmup_steps=5"]
    return args, records


def overfit_speech_run(root: Path) -> tuple[Path, list[str], list[dict]]:
    """Train (once: a complete run under ``root`` is reused) the overfit run of :func:`overfit_args`; returns its
    run dir, its overrides and the (question, answer) records it learned to speak."""
    from tests.conftest import run_vita

    args, records = overfit_args(root)
    run_dir = root / "overfit"
    if not (run_dir / "COMPLETE.json").is_file():
        run_vita(args, timeout=1200)
    return run_dir, args, records
