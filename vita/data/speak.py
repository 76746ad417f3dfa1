"""Speech from text with Debian ``flite`` (``apt-get install flite``), for users without recordings.

:func:`flite_speech` speaks one text with a flite voice (slt, rms, awb, kal, kal16) and returns the
waveform; :func:`sentences` reads vita's bundled sentence list (``vita/assets/speech/sentences.txt``,
``train`` sentences to fit codecs, ``heldout`` sentences to score them). Whisper tiny.en transcribes
flite's slt voice at a word error rate of about 0.03 (docs/SPEECH.md), which makes it usable ASR
material for measuring codecs and speech decoders.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from vita.errors import DataError

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
    exe = shutil.which("flite")
    if exe is None:
        raise DataError("flite is not installed: apt-get install -y flite (or make deps)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        (Path(tmp) / "text.txt").write_text(text + "\n")
        subprocess.run([exe, "-voice", voice, "-f", str(Path(tmp) / "text.txt"), "-o", str(wav)], check=True,
                       capture_output=True)
        wave, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    return wave.mean(axis=1), int(rate)
