"""How intelligible does a decoder trained on CPU speak unseen answers? (``python -m vita.bench.speech_training``)

Issue 19's measure: ``smol_omni_speech`` trained on ≥ 500 flite answer sentences, the ASR word error rate of the
speech it generates for ≥ 20 unseen answers, before and after, and the CPU time it took. Nothing is asserted.

1. Answers: the chatterbot-corpus English answers (bundled with vita's demo) that a voice can read — words
   and plain punctuation, 3 to 16 words — deduplicated, shuffled with a fixed seed, split into ``--train`` and
   ``--heldout``; each asked for by its corpus question. flite (``--voice``) speaks them
   (:func:`vita.data.speak.speak_annotations`, the same as ``python -m vita.data.speak``).
2. Stage 3.1: ``experiment=smol_omni_codec`` on these answers (the codec is fitted on the train answers).
3. Stage 3.2: ``experiment=smol_omni_speech`` for ``--steps`` steps with in-loop evaluation of the held-out
   answers by ``asr_wer`` at the start (the untrained decoder) and the end; Whisper tiny.en transcribes.

Both stages run through ``python -m vita.run`` with a data config written to ``OUT/conf/data`` and found via
``hydra.searchpath``: the benchmark trains exactly as a user would.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

SPEAKABLE = re.compile(r"^[A-Za-z][A-Za-z ,.'?!-]*$")


def answer_pairs(seed: int = 0) -> list[tuple[str, str]]:
    """(question, answer) pairs of the chatterbot corpus whose answer flite can read (3-16 plain words)."""
    from vita.data.chatterbot import load_conversations

    seen, pairs = set(), []
    for conv in load_conversations("english", None):
        turns = conv["conversations"]
        for q, a in zip(turns[0::2], turns[1::2]):
            text = a["value"].strip()
            if SPEAKABLE.match(text) and 3 <= len(text.split()) <= 16 and text.lower() not in seen:
                seen.add(text.lower())
                pairs.append((q["value"].strip(), text))
    random.Random(seed).shuffle(pairs)
    return pairs


def write_data(out: Path, n_train: int, n_held: int, voice: str) -> Path:
    """Annotations + flite WAVs under ``out/data``; a data config under ``out/conf/data``; returns the conf dir."""
    from vita.data.speak import speak_annotations

    pairs = answer_pairs()
    if len(pairs) < n_train + n_held:
        raise SystemExit(f"only {len(pairs)} speakable answers; ask for fewer (--train/--heldout)")
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split, chunk in (("train", pairs[:n_train]), ("heldout", pairs[n_train:n_train + n_held])):
        raw = data / f"raw_{split}.jsonl"
        raw.write_text("".join(json.dumps({"id": f"{split}-{i:04d}", "conversations": [
            {"from": "human", "value": q}, {"from": "gpt", "value": a}]}) + "\n" for i, (q, a) in enumerate(chunk)))
        spoken, _ = speak_annotations(raw, data / split, voice=voice)
        spoken.rename(data / f"{split}.jsonl")
    conf = out / "conf"
    (conf / "data").mkdir(parents=True, exist_ok=True)
    (conf / "data" / "bench_spoken.yaml").write_text(
        "name: bench_spoken\nformat: vita\ntemplate: smollm2\nmax_length: 256\nsampler: length_grouped\n"
        f"datasets:\n  - {{name: answers, annotations: [{data / 'train.jsonl'}], audio_root: {data / 'train'}}}\n"
        f"eval:\n  heldout: {{annotations: [{data / 'heldout.jsonl'}], audio_root: {data / 'heldout'}, "
        "metric: asr_wer, max_new_tokens: 48, batch_size: 4}\n")
    return conf


def vita_run(args: list[str], log: Path) -> float:
    """One ``python -m vita.run``; returns its CPU seconds (user + system of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("w") as f:
        p = subprocess.run([sys.executable, "-m", "vita.run", *args], stdout=f, stderr=subprocess.STDOUT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        raise SystemExit(f"vita.run failed (exit {p.returncode}); see {log}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run(out: Path, n_train: int, n_held: int, steps: int, voice: str, extra: list[str]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    conf = write_data(out, n_train, n_held, voice)
    common = ["data=bench_spoken", f"hydra.searchpath=[file://{conf}]", f"output_root={out / 'runs'}",
              "logging.progress_bar=false"]
    codec_cpu = vita_run(["experiment=smol_omni_codec", "name=codec", *common], out / "codec.log")
    codec_dir = next((out / "runs" / "codec").rglob("final/codec"))
    rec = json.loads(next((out / "runs" / "codec").rglob("codec_stage.json")).read_text())
    train_cpu = vita_run(["experiment=smol_omni_speech", "name=speech", f"model.speech.codec_path={codec_dir}",
                          f"train.max_steps={steps}", f"train.eval_every={steps}", "train.eval_at_start=true",
                          f"train.ckpt_every={steps}", *common, *extra], out / "speech.log")
    rows = [json.loads(x) for x in next((out / "runs" / "speech").rglob("metrics.jsonl")).read_text().splitlines()]
    evals = [r for r in rows if "eval/heldout/asr_wer" in r]
    losses = [r["speech_loss"] for r in rows if "speech_loss" in r]
    return {"train_answers": n_train, "heldout_answers": n_held, "voice": voice, "steps": steps,
            "codec_wer_heldout": rec["after"].get("eval/heldout/codec_wer"),
            "asr_wer_before": evals[0]["eval/heldout/asr_wer"] if evals else None,
            "asr_wer_after": evals[-1]["eval/heldout/asr_wer"] if len(evals) > 1 else None,
            "speech_loss_first_last": [losses[0], losses[-1]] if losses else None,
            "cpu_s_codec": round(codec_cpu, 1), "cpu_s_train": round(train_cpu, 1), "wall_s": round(time.time() - t0, 1),
            "loadavg_1min_end": os.getloadavg()[0], "extra": extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("outputs/bench_speech_training"))
    ap.add_argument("--train", type=int, default=500)
    ap.add_argument("--heldout", type=int, default=20)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--voice", default="slt")
    ap.add_argument("overrides", nargs="*", help="more vita.run overrides for stage 3.2 (model.speech.decoder=...)")
    a = ap.parse_args()
    print(json.dumps(run(a.out, a.train, a.heldout, a.steps, a.voice, a.overrides), indent=1))


if __name__ == "__main__":
    main()
