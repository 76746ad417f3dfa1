"""Spoken answers at data time: a turn's ``"speech"`` WAV -> codec codes ``[F, K]`` and its text-token span.

An assistant turn may carry ``"speech": "answers/0001.wav"`` (under the dataset's ``audio_root``). For a speaking
model (``DataSpec.speech_codec`` set) the file is read (mono only), checked to be speech-like (not silence) and
no longer than the decoder takes (``DataSpec.speech_max_frames``), resampled to the codec's rate and encoded by
the codec (:func:`vita.model.speech.codecs.codec_from_spec`, built once per process). Each problem is a
:class:`~vita.data.media.MediaError` of its own kind, turned into one line with the file, the sample and the
fix; speech given to a model without a speech decoder is a bad sample too (never silently ignored).

The answer's *span* is the tokens of its supervised segment minus the trailing end-of-turn tokens
(``ChatFormat.end``): exactly what the model generates before it stops (:func:`answer_spans`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from vita.data.media import MediaError, _open_arg
from vita.spec import DataSpec

MIN_RMS_DB = -60.0
"""A spoken answer whose RMS level is below this (dBFS) is silence, not speech."""

KINDS = ("missing speech answer", "unreadable speech answer", "silent speech answer", "speech answer not mono",
         "speech answer too long", "speech answer without text", "speech answer without speech decoder",
         "spoken answer cut by truncation", "speech on a user turn")
"""The bad-sample kinds of spoken answers (what ``vita.check`` and ``skipped/*`` counts name)."""


def speech_spec(speech_cfg, codec=None) -> dict:
    """``DataSpec`` fields of ``cfg.model.speech``: ``speech_codec`` (``(key, folder, sorted options)``, None when
    the model does not speak) and ``speech_max_frames`` (``max_seconds`` x the codec's frame rate; ``codec``: the
    built codec, else it is built from the spec)."""
    if not speech_cfg or not speech_cfg.get("codec") or not speech_cfg.get("decoder"):
        return {"speech_codec": None, "speech_max_frames": 0}
    from vita.model.speech.codecs import codec_from_spec

    folder = speech_cfg.get("codec_path")
    options = tuple(sorted((k, _frozen(v)) for k, v in dict(speech_cfg.get("codec_options") or {}).items()))
    spec = (str(speech_cfg["codec"]), str(folder) if folder else None, options)
    codec = codec or codec_from_spec(spec)
    return {"speech_codec": spec, "speech_max_frames": int(math.ceil(float(speech_cfg.get("max_seconds") or 0)
                                                                       * codec.frame_rate))}


def _frozen(value):
    """An option value made hashable (lists -> tuples), so the spec can key the per-process codec cache."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return tuple(_frozen(v) for v in value)
    return value


def codec_stamp(spec: DataSpec | None) -> list:
    """What the codes depend on beyond the spec itself: the codec folder's files (a hash of each file up to 16 MB,
    size and mtime of larger ones), so a codec refitted at the same path makes new cache keys and fingerprints."""
    import hashlib

    if spec is None or spec.speech_codec is None or spec.speech_codec[1] is None:
        return []
    folder = Path(spec.speech_codec[1])
    if not folder.is_dir():
        return [str(folder)]
    out = []
    for f in sorted(folder.iterdir()):
        if f.is_file():
            st = f.stat()
            out.append([f.name, st.st_size, hashlib.sha256(f.read_bytes()).hexdigest()[:16] if st.st_size <= 2**24
                        else st.st_mtime_ns])
    return out


def load_speech(path) -> tuple[np.ndarray, int]:
    """A spoken answer's mono float32 waveform and rate; a file that is unreadable, empty, not mono, not finite or
    silent raises :class:`MediaError` of its kind. Several channels are refused, not mixed: which one speaks?"""
    import soundfile as sf

    try:
        wave, rate = sf.read(_open_arg(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise MediaError("unreadable speech answer", path, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                         "; re-export it as a WAV/FLAC file") from None
    if wave.shape[0] == 0:
        raise MediaError("unreadable speech answer", path, "the file has no samples; re-record it or drop the speech")
    if wave.shape[1] != 1:
        raise MediaError("speech answer not mono", path, f"{wave.shape[1]} channels; a spoken answer must be one "
                         "voice in one channel (e.g. sox in.wav -c 1 out.wav, or keep the channel that speaks)")
    wave = wave[:, 0]
    if not np.isfinite(wave).all():
        raise MediaError("unreadable speech answer", path, "the waveform holds NaN or inf samples; re-export it")
    rms = float(np.sqrt(np.mean(wave.astype(np.float64) ** 2)))
    db = 20 * math.log10(max(rms, 1e-12))
    if db < MIN_RMS_DB:
        raise MediaError("silent speech answer", path, f"RMS level {db:.0f} dBFS < {MIN_RMS_DB:.0f} dBFS: silence, not "
                         "speech; replace it with the spoken answer (python -m vita.data.speak) or drop the speech")
    return wave, int(rate)


def speech_codes(path, spec: DataSpec) -> torch.Tensor:
    """The codes (LongTensor ``[F, K]``) of the spoken answer at ``path`` by ``spec``'s codec; raises MediaError."""
    from vita.model.speech.codecs import codec_from_spec

    wave, rate = load_speech(path)
    codec = codec_from_spec(spec.speech_codec)
    codes = codec.encode(torch.from_numpy(np.ascontiguousarray(wave)), rate)
    if spec.speech_max_frames and codes.shape[0] > spec.speech_max_frames:
        raise MediaError("speech answer too long", path, f"{len(wave) / rate:.1f} s = {codes.shape[0]} code frames > "
                         f"the decoder's {spec.speech_max_frames} (model.speech.max_seconds); shorten the answer or "
                         "raise model.speech.max_seconds")
    if codes.shape[0] == 0:
        raise MediaError("unreadable speech answer", path, f"{len(wave)} samples give no code frame; too short")
    return codes.long()


def answer_spans(ranges: list[tuple[int, int]], supervised: list[bool], turns: list[tuple[str, str]],
                 spoken: list[int], end_ids: list[int], input_ids: list[int]) -> list[tuple[int, int]]:
    """``(start, end)`` token positions of each spoken turn's answer text: the k-th supervised segment belongs to the
    k-th assistant turn; its trailing end-of-turn tokens (``end_ids``) are not part of the span."""
    seg_of = [i for i, sup in enumerate(supervised) if sup]
    turn_k = {t: k for k, t in enumerate(i for i, (role, _) in enumerate(turns) if role == "assistant")}
    out = []
    for t in spoken:
        start, end = ranges[seg_of[turn_k[t]]]
        n = len(end_ids)
        if n and end - start >= n and input_ids[end - n:end] == end_ids:
            end -= n
        out.append((start, end))
    return out
