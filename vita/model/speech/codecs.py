"""``SPEECH_CODECS``: speech <-> discrete codes, for VITA-1.5's stage 3 (speech out).

Every entry builds a :class:`~vita.model.speech.base.SpeechCodec`: ``encode(wave, rate) -> codes
[frames, codebooks]`` (LongTensor in ``[0, codebook_size)``), ``decode(codes) -> wave`` at
``sample_rate``, ``frame_rate``, ``codebooks``, ``codebook_size``, and a streaming decoder
(``stream_decoder()`` / ``decode_chunks(codes_iter)``) whose output equals ``decode`` (blockwise
decode with context and cross-fade; see :mod:`vita.model.speech.base`).

=================  ======================================================================  =====
key                what                                                                     rate
=================  ======================================================================  =====
``mel_rvq``        vita's own: log-mel + residual VQ fitted by vita + Griffin-Lim (16 kHz)  62.5 Hz
``mel_rvq-tiny``   the same, tiny shapes (tests)
``codec2``         classic codec2 via ``pycodec2`` (8 kHz; ``mode`` 3200, 1300, 700 ...)   50 Hz
``mimi``           transformers ``MimiModel`` from a folder / hub id (24 kHz)              12.5 Hz
``encodec``        transformers ``EncodecModel`` from a folder / hub id (24 kHz)           75 Hz
``ticodec``        VITA-1.5's codec: not supported (raises, says why)
=================  ======================================================================  =====

**TiCodec (VITA-1.5's codec), from public code.** VITA-1.5's paper trains TiCodec (one codebook of
1,024 entries, 40 Hz, 24 kHz). Its released code lives in the TiCodec authors' repository
(``academicodec/models/ticodec``, HiFi-Codec lineage) and is vendored by VITA-1.5 under
``vita/model/vita_tts/decoder/ticodec``. What the public inference code defines: ``VQVAE(config,
ckpt)`` loads a *pickled* torch checkpoint with ``generator`` / ``quantizer`` (/ ``encoder``) state
dicts; ``encode(wave)`` returns **frame codes** ``[B, T, n_code_groups * residual_layers]`` (one
group, one residual layer, 1,024 codes in VITA-1.5's setting) **plus time-invariant "global"
codes** ``[B, 1, global_code_num]`` per utterance (8 in the published configs); the generator (a
HiFi-GAN upsampler) needs both to decode. The published TiCodec configs are 24 kHz with an
upsampling product of 320 (75 Hz, ``hop_size`` 240 for the mel loss); VITA-1.5's 40 Hz is 600
samples per code (its demo decodes 600 samples per token), a config not in the TiCodec repository.
vita's ``[frames, codebooks]`` layout can hold the frame codes; the global codes would need a
second, per-utterance output, and the model (encoder, quantiser, generator) would have to be
written for vita and its pickled weights converted with ``torch.load(weights_only=True)``. No
weights install offline, so the entry raises with this summary rather than pretend.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from vita.errors import ConfigError
from vita.model.speech.base import SpeechCodec
from vita.model.speech.mel_rvq import TINY, MelRVQCodec, load_mel_rvq, make_config
from vita.registry import SPEECH_CODECS


@SPEECH_CODECS.register("mel_rvq")
def mel_rvq(path: str | Path | None = None, **overrides: Any) -> SpeechCodec:
    """vita's offline codec; ``path``: a fitted codec folder (``fit_mel_rvq(...).save(path)``); without it,
    random (unfitted) codebooks of the configured shape."""
    if path is not None:
        return load_mel_rvq(path, **overrides)
    return MelRVQCodec(make_config(overrides))


@SPEECH_CODECS.register("mel_rvq-tiny")
def mel_rvq_tiny(**overrides: Any) -> SpeechCodec:
    """``mel_rvq`` with tiny shapes (20 mels, 2 x 16 codes, 4 Griffin-Lim iterations)."""
    return MelRVQCodec(make_config({**TINY, **overrides}, "mel_rvq-tiny"))


@SPEECH_CODECS.register("codec2")
def codec2(mode: int = 3200, block: int = 10) -> SpeechCodec:
    """codec2 at ``mode`` bit/s through pycodec2 (a clear install error without it)."""
    from vita.model.speech.codec2 import Codec2Codec

    return Codec2Codec(mode, block)


@SPEECH_CODECS.register("mimi")
def mimi(path: str | Path, num_quantizers: int | None = None, block: int = 4, left: int = 8, right: int = 1,
         crossfade: int | None = None) -> SpeechCodec:
    """transformers ``MimiModel`` from ``path`` (a ``save_pretrained`` folder or a cached hub id);
    ``num_quantizers`` codebooks (default: 8, as Moshi, or all the checkpoint has if fewer)."""
    from vita.model.speech.hf_codecs import HFCodec

    return HFCodec("mimi", path, num_quantizers=num_quantizers, block=block, left=left, right=right,
                   crossfade=crossfade)


@SPEECH_CODECS.register("encodec")
def encodec(path: str | Path, bandwidth: float | None = None, block: int = 25, left: int = 25, right: int = 5,
            crossfade: int | None = None) -> SpeechCodec:
    """transformers ``EncodecModel`` from ``path``; ``bandwidth`` (kbps) picks the number of codebooks."""
    from vita.model.speech.hf_codecs import HFCodec

    return HFCodec("encodec", path, bandwidth=bandwidth, block=block, left=left, right=right, crossfade=crossfade)


@SPEECH_CODECS.register("ticodec")
def ticodec(path: str | Path | None = None) -> SpeechCodec:
    """VITA-1.5's TiCodec: not supported yet (see this module's docstring for what its public code defines)."""
    raise ConfigError("speech codec 'ticodec' (VITA-1.5's codec) is not supported: its public inference code loads "
                      "a pickled checkpoint and decodes frame codes [T, 1] (1,024 entries) together with 8 per-"
                      "utterance global codes, which vita's [frames, codebooks] codecs do not carry yet; use "
                      "mel_rvq, codec2, mimi or encodec (docs/SPEECH.md)")


@lru_cache(maxsize=4)
def codec_from_spec(spec: tuple) -> SpeechCodec:
    """The codec a :class:`~vita.spec.DataSpec`'s ``speech_codec`` names: ``(key, folder or None, sorted option
    items)``. Cached per process, so each data worker builds it once."""
    from vita.registry import load_builtins

    if not isinstance(spec, tuple) or len(spec) != 3:
        raise ConfigError(f"speech codec spec {spec!r} must be (codec key, folder or None, sorted option items)")
    key, folder, options = spec
    load_builtins()
    kwargs = dict(options)
    if folder is not None:
        kwargs["path"] = folder
    return SPEECH_CODECS.build(key, **kwargs)
