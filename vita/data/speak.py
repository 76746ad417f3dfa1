"""Speech from text with Debian ``flite`` (``apt-get install flite``), for users without recordings.

    python -m vita.data.speak ANNOTATIONS --out DIR [--voice slt] [--overwrite]

speaks every assistant answer that has no ``"speech"`` yet (all of them with ``--overwrite``) into
``DIR/answers/*.wav`` and writes ``DIR/<ANNOTATIONS' name>`` with the ``"speech"`` fields set, relative to ``DIR``
(use ``DIR`` as the dataset's ``audio_root``). Answers that already have speech keep their path as written
(relative to their own ``audio_root``): pass ``--overwrite`` to have every answer spoken under ``DIR``.

:func:`flite_speech` speaks one text with a flite voice (slt, rms, awb, kal, kal16) and returns the
waveform; :func:`sentences` reads vita's bundled sentence list (``vita/assets/speech/sentences.txt``,
``train`` sentences to fit codecs, ``heldout`` sentences to score them). Whisper tiny.en transcribes
flite's slt voice at a word error rate of about 0.03 (docs/SPEECH.md), which makes it usable ASR
material for measuring codecs and speech decoders.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from vita.errors import DataError, one_line_errors

SENTENCES = Path(__file__).resolve().parents[1] / "assets" / "speech" / "sentences.txt"
VOICES = ("slt", "rms", "awb", "kal", "kal16")


def sentences(split: str) -> list[str]:
    """The bundled sentences of ``split`` (``train`` or ``heldout``)."""
    out = [line.split(":", 1)[1].strip() for line in SENTENCES.read_text().splitlines()
           if line.startswith(f"{split}:")]
    if not out:
        raise DataError(f"{SENTENCES}: no '{split}:' sentences (splits: train, heldout)")
    return out


def flite_speech(text: str, voice: str = "slt") -> tuple[np.ndarray, int]:
    """``text`` spoken by flite's ``voice``: (mono float32 waveform, sample rate)."""
    import soundfile as sf

    if voice not in VOICES:
        raise DataError(f"flite voice '{voice}' unknown; voices: {', '.join(VOICES)}")
    exe = flite_exe()
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        (Path(tmp) / "text.txt").write_text(text + "\n")
        subprocess.run([exe, "-voice", voice, "-f", str(Path(tmp) / "text.txt"), "-o", str(wav)], check=True,
                       capture_output=True)
        wave, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    return wave.mean(axis=1), int(rate)


def flite_exe() -> str:
    """The flite program, or a one-line error naming the Debian package."""
    exe = shutil.which("flite")
    if exe is None:
        raise DataError("flite is not installed: apt-get install -y flite (or make deps)")
    return exe


def speak_annotations(path: str | Path, out: str | Path, voice: str = "slt", overwrite: bool = False,
                      progress: bool = True) -> tuple[Path, int]:
    """Speak the answers of the annotation file ``path`` (see the module docstring); returns the annotation file
    written and the number of WAVs made. A record that is not JSON or not a sample raises one line with file:line."""
    import soundfile as sf

    from vita.data.schema import ASSISTANT_ROLES, AnnotationFile

    if voice not in VOICES:
        raise DataError(f"flite voice '{voice}' unknown; voices: {', '.join(VOICES)}")
    flite_exe()
    src, out = AnnotationFile(path), Path(out)
    (out / "answers").mkdir(parents=True, exist_ok=True)
    records, made = [], 0
    it = range(len(src))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=f"speaking ({voice})", unit="sample", dynamic_ncols=True)
    for i in it:
        rec = src.read(i)
        conv = rec.get("conversations") if isinstance(rec, dict) else None
        if not isinstance(conv, list):
            raise DataError(f"{src.where(i)}: not a sample (a JSON object with a 'conversations' list); fix the record")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(rec.get("id", i)))[:80] or str(i)
        for t, turn in enumerate(conv):
            if not isinstance(turn, dict) or str(turn.get("from", "")).lower() not in ASSISTANT_ROLES:
                continue
            text = turn.get("value")
            if not isinstance(text, str) or not text.strip() or ("speech" in turn and not overwrite):
                continue
            rel = f"answers/{i:06d}_{name}_{t}.wav"
            wave, rate = flite_speech(text, voice)
            sf.write(str(out / rel), wave, rate, subtype="PCM_16")
            turn["speech"] = rel
            made += 1
        records.append(rec)
    dst = out / src.path.name
    if src.path.resolve() == dst.resolve():
        raise DataError(f"--out {out} holds the input {src.path}; choose another folder (the input stays as it is)")
    if src.jsonl:
        dst.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    else:
        dst.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return dst, made


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    """Exit 0 when written, 2 on an error (one line)."""
    ap = argparse.ArgumentParser(prog="python -m vita.data.speak", description="Speak the assistant answers of an "
                                 "annotation file with flite and set their \"speech\" fields.")
    ap.add_argument("annotations", help="a .json list or .jsonl file of samples")
    ap.add_argument("--out", required=True, help="folder for answers/*.wav and the annotation file with speech set")
    ap.add_argument("--voice", default="slt", choices=VOICES, help="flite voice (default slt)")
    ap.add_argument("--overwrite", action="store_true", help="speak every answer, also those that have speech")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    dst, made = speak_annotations(args.annotations, args.out, args.voice, args.overwrite, not args.no_progress)
    print(f"{dst}: {made} answer(s) spoken with flite {args.voice}; train with audio_root: {Path(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
