"""Stage 3.1 (``stage.task=codec``): fit the speech codec on the data's spoken answers, and score it.

VITA-1.5 trains its codec before its speech decoders. vita's offline codec, ``mel_rvq``, is a residual VQ
over log-mel frames whose codebooks are *fitted* (k-means, :func:`vita.model.speech.mel_rvq.fit_mel_rvq`)
rather than trained by gradient, so this stage runs no optimizer: it reads every spoken answer (``"speech"``
on an assistant turn) of ``data.datasets``, fits the codec named by ``model.speech`` (its shape from
``model.speech.codec_options``, the fit's own options from ``stage.codec_fit``), and writes it to
``<run>/final/codec`` — the folder stage 3.2 names as ``model.speech.codec_path``.

Before and after the fit, each ``data.eval`` set's spoken answers go through the codec (encode, streamed
decode) and an ASR (the shipped Whisper tiny.en, :class:`vita.eval.asr.WhisperASR`) transcribes them; the word
error rate against the answer text is logged as ``eval/<set>/codec_wer`` at steps 0 (the unfitted codec:
random codebooks of the same shape) and 1 (the fitted one), in ``metrics.jsonl`` like any run's metrics.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from vita.errors import ConfigError, DataError

log = logging.getLogger("vita")
FITTERS = ("mel_rvq",)
"""Codecs this stage can fit; the others (codec2, mimi, encodec) come ready and skip stage 3.1."""
CODEC_DIR = "codec"


def spoken_answers(entries: list, what: str, limit: int = 0) -> list[tuple[Path, str, str]]:
    """``(wav path, answer text, location)`` of every spoken answer in ``entries`` (dataset entries of
    ``data.datasets`` or ``data.eval`` sets: their annotation files and media roots), parsed and
    root-confined by the data schema (:func:`vita.data.schema.parse_sample`)."""
    from vita.data.schema import AnnotationFile, parse_sample
    from vita.eval.sets import roots_of

    out = []
    for name, entry in entries:
        roots = roots_of(entry, name)
        for path in entry.annotations:
            ann = AnnotationFile(path)
            for i in range(len(ann)):
                s = parse_sample(ann.read(i), ann.where(i), roots)
                out.extend((Path(p), s.turns[t][1], f"{s.where} sample '{s.id}'") for t, p in sorted(s.speech.items()))
    out = out[:limit] if limit else out  # an eval set's ``limit``: its first spoken answers
    if not out:
        raise DataError(f"stage 3.1 found no spoken answer in {what}: give assistant turns a \"speech\" "
                        "file (python -m vita.data.speak ANNOTATIONS --out DIR writes them with flite)")
    return out


def read_speech(path: Path, where: str) -> tuple[torch.Tensor, int]:
    """The data pipeline's reader (:func:`vita.data.speech.load_speech`); its refusal is one line naming the sample."""
    from vita.data.media import MediaError
    from vita.data.speech import load_speech

    try:
        wave, rate = load_speech(path)
    except MediaError as e:
        raise DataError(f"{where}: {e}") from None
    return torch.from_numpy(np.ascontiguousarray(wave)), int(rate)


def roundtrip_wer(codec, items: list[tuple[Path, str, str]], asr) -> float:
    """Corpus WER of ``items``' speech after the codec's encode + decode, transcribed by ``asr``."""
    from vita.eval.metrics import wer

    hyps = []
    for path, _, where in items:
        wave, rate = read_speech(path, where)
        hyps.append(asr(codec.decode(codec.encode(wave, rate)).numpy(), codec.sample_rate))
    return wer(hyps, [text for _, text, _ in items])


def run_codec_stage(cfg, run_dir: Path) -> dict:
    """Fit ``cfg.model.speech.codec`` on the training set's spoken answers; returns the final metrics."""
    from omegaconf import OmegaConf

    from vita.artefacts import final_of
    from vita.engine.metrics import MetricsLogger
    from vita.engine.run_dir import mark_complete
    from vita.eval.asr import WhisperASR
    from vita.model.speech.mel_rvq import fit_mel_rvq
    from vita.registry import SPEECH_CODECS, load_builtins

    load_builtins()
    key = cfg.model.speech.codec
    if key not in FITTERS:
        raise ConfigError(f"stage.task=codec fits {', '.join(FITTERS)}; model.speech.codec={key!r} "
                          f"{'comes ready (no stage 3.1): go on to stage 3.2' if key else 'is not set'}")
    if not cfg.data.datasets:
        raise ConfigError("stage 3.1 reads spoken answers from data.datasets (format: vita); none is listed")
    shape = OmegaConf.to_container(cfg.model.speech.codec_options, resolve=True)
    fit_opts = OmegaConf.to_container(cfg.stage.codec_fit, resolve=True)
    train = spoken_answers([(d.name, d) for d in cfg.data.datasets], "data.datasets")
    evals = {name: spoken_answers([(name, e)], f"data.eval.{name}", e.limit) for name, e in cfg.data.eval.items()}
    asr = WhisperASR() if evals else None
    logger = MetricsLogger(run_dir, list(cfg.logging.loggers), True, str(cfg.name),
                          OmegaConf.to_container(cfg, resolve=True))
    try:
        before = {f"eval/{n}/codec_wer": roundtrip_wer(SPEECH_CODECS.build(key, **shape), items, asr)
                  for n, items in evals.items()}
        logger.log(0, before)
        waves = [read_speech(p, w) for p, _, w in train]
        log.info("stage 3.1: fitting %s on %d spoken answers (%.1f s of speech)", key, len(waves),
                 sum(len(w) / r for w, r in waves))
        codec = fit_mel_rvq(waves, **fit_opts, **shape)
        out = codec.save(final_of(run_dir) / CODEC_DIR)
        after = {f"eval/{n}/codec_wer": roundtrip_wer(codec, items, asr) for n, items in evals.items()}
        after["speech_answers"] = len(waves)
        logger.log(1, after, final=True)
    finally:
        logger.close()
    (run_dir / "codec_stage.json").write_text(json.dumps({"before": before, "after": after, "codec": str(out),
                                                          "pid": os.getpid()}, indent=1) + "\n")
    mark_complete(run_dir, cfg, 1)
    print(f"\nstage 3.1 complete: codec {out}\n  " + "\n  ".join(
        f"{k}: {before[k]:.3f} (unfitted) -> {after[k]:.3f}" for k in before), flush=True)
    return after
