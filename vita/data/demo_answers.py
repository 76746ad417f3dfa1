"""The demo's spoken-answer set (speech out, VITA-1.5 stage 3): question/answer pairs whose answers flite speaks.

Each answer is one of vita's bundled sentences (``vita/assets/speech/sentences.txt``: the 40 ``train`` ones for
training, the 12 ``heldout`` ones for eval), asked for by a short question ("Read this aloud: ..."); flite's
``slt`` voice speaks it into ``spoken_answers/answers/*.wav``. A ``mel_rvq`` codec fitted on the train answers
(:func:`vita.model.speech.mel_rvq.fit_mel_rvq`, 4 x 256 codes at 62.5 Hz) lies in ``spoken_answers/codec``, so a
speaking model can point ``model.speech.codec_path`` at ``${vita_demo:spoken_answers/codec}``.
``conf/data/demo_spoken_answers.yaml`` trains on it.

    python -m vita.data.demo_answers [--root DIR] [--force]     # also written by python -m vita.data.demo
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from vita.config import demo_data_dir
from vita.errors import one_line_errors

FOLDER = "spoken_answers"
QUESTIONS = ("Read this aloud: {s}", "Please say this sentence: {s}", "Say it back to me: {s}",
             "Repeat after me: {s}")
VOICE = "slt"
VERSION = 1
"""Bumped when the set changes, so an older one is rewritten."""


def records(split: str) -> list[dict]:
    """The question/answer records of ``split`` (``train`` / ``heldout``), speech paths relative to the folder."""
    from vita.data.speak import sentences

    return [{"id": f"spoken-{split}-{k:02d}",
             "conversations": [{"from": "human", "value": QUESTIONS[k % len(QUESTIONS)].format(s=s)},
                               {"from": "gpt", "value": s, "speech": f"answers/{split}_{k:02d}.wav"}]}
            for k, s in enumerate(sentences(split))]


def is_current(root: Path) -> bool:
    stamp = root / FOLDER / "version.json"
    anns = [root / "annotations" / f"{FOLDER}_{split}.jsonl" for split in ("train", "heldout")]
    return stamp.is_file() and json.loads(stamp.read_text()).get("version") == VERSION and \
        (root / FOLDER / "codec" / "config.json").is_file() and all(a.is_file() for a in anns)


def write_spoken_answers(root: str | Path | None = None, force: bool = False) -> Path:
    """Write the set under ``root`` (default: the demo data folder) unless it is already there; returns its folder
    (``answers/``, ``codec/``) and writes ``annotations/spoken_answers_{train,heldout}.jsonl``."""
    import soundfile as sf
    import torch

    from vita.data.speak import flite_speech
    from vita.model.speech.mel_rvq import fit_mel_rvq

    root = Path(root or demo_data_dir())
    out = root / FOLDER
    if is_current(root) and not force:
        return out
    tmp = root / f".{FOLDER}.{os.getpid()}"  # written aside, then moved in: a concurrent reader never sees half a set
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "answers").mkdir(parents=True)
    train, anns = [], {}
    for split in ("train", "heldout"):
        recs = records(split)
        for r in recs:
            turn = r["conversations"][1]
            wave, rate = flite_speech(turn["value"], VOICE)
            sf.write(str(tmp / turn["speech"]), wave, rate, subtype="PCM_16")
            if split == "train":
                train.append((torch.from_numpy(wave), rate))
        anns[split] = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
    fit_mel_rvq(train, iters=10).save(tmp / "codec")
    (tmp / "version.json").write_text(json.dumps({"version": VERSION, "voice": VOICE}) + "\n")
    if out.exists():
        shutil.rmtree(out, ignore_errors=True)
    try:
        os.replace(tmp, out)
    except OSError:  # another process moved its (identical) set in first
        shutil.rmtree(tmp, ignore_errors=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, text in anns.items():
        ann = root / "annotations" / f"{FOLDER}_{split}.jsonl"
        part = ann.with_name(f".{ann.name}.{os.getpid()}")
        part.write_text(text, encoding="utf-8")
        os.replace(part, ann)
    return out


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    """Exit 0 when written, 2 on an error (one line: flite missing ...)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=None, help="demo data folder (default: $VITA_DEMO_DIR or "
                    "~/.cache/vita/demo)")
    ap.add_argument("--force", action="store_true", help="rewrite the set even if it is there")
    args = ap.parse_args(argv)
    print(write_spoken_answers(args.root, args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
