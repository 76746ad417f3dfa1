"""``codec2``: the classic low-bit-rate speech codec (8 kHz), through the ``pycodec2`` wheel.

A frame of ``samples_per_frame`` samples (20 ms in mode 3200, 40 ms in 1300/700C) is packed into
``bytes_per_frame`` bytes; vita's codes are those bytes, one per codebook (``codebook_size`` 256;
mode 3200: 8 codes of 8 bits per frame at 50 Hz). The decoder is frame-synchronous and keeps its own
history, so blocks need no overlap: the stream state is the ``pycodec2.Codec2`` decoder itself.

**Not bit-reproducible.** libcodec2 draws the phases of unvoiced harmonics from a process-wide random
generator that pycodec2 cannot reset, so two decodes of the same codes (whole or streamed) differ
sample by sample while their spectra agree; the chunked-decode test compares log-mel spectra for this
entry (the other entries are compared sample by sample at 1e-5).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vita.errors import ConfigError
from vita.model.speech.base import SpeechCodec
from vita.signal import resample

MODES = (3200, 2400, 1600, 1400, 1300, 1200, 700)


def _pycodec2():
    try:
        import pycodec2
    except ImportError:
        raise ConfigError("speech codec codec2 needs the pycodec2 wheel: pip install pycodec2 "
                          "(it bundles libcodec2; needs numpy >= 2)") from None
    return pycodec2


class Codec2Codec(SpeechCodec):
    name = "codec2"
    sample_rate = 8000
    codebook_size = 256

    def __init__(self, mode: int = 3200, block: int = 10) -> None:
        if mode not in MODES:
            raise ConfigError(f"codec2: unknown mode {mode}; modes: {', '.join(map(str, MODES))}")
        self.mode = mode
        probe = _pycodec2().Codec2(mode)
        self.spf, self.codebooks = probe.samples_per_frame(), probe.bytes_per_frame()
        self.frame_rate = self.sample_rate / self.spf
        self.block = block

    @property
    def samples_per_frame(self) -> int:
        return self.spf

    def encode(self, wave: torch.Tensor, rate: int) -> torch.Tensor:
        wave = self.check_wave(wave, rate).numpy()
        wave = resample(wave.astype(np.float32), rate, self.sample_rate)
        pcm = np.clip(np.round(wave * 32767), -32768, 32767).astype(np.int16)
        frames = max(1, -(-len(pcm) // self.spf))
        pcm = np.pad(pcm, (0, frames * self.spf - len(pcm)))
        c2 = _pycodec2().Codec2(self.mode)
        codes = [np.frombuffer(c2.encode(pcm[i * self.spf:(i + 1) * self.spf]), dtype=np.uint8) for i in range(frames)]
        return torch.from_numpy(np.stack(codes).astype(np.int64))

    def decode_span(self, codes: torch.Tensor, start: int, state: Any) -> tuple[torch.Tensor, Any]:
        c2 = state if state is not None else _pycodec2().Codec2(self.mode)
        out = [np.array(c2.decode(bytes(row.to(torch.uint8).tolist())), dtype=np.float32) for row in codes]
        wave = np.concatenate(out) / 32768.0 if out else np.zeros(0, np.float32)
        return torch.from_numpy(wave.astype(np.float32)), c2
