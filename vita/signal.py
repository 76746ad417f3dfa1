"""Waveform helpers shared by the data layer (audio features) and the model layer (speech codecs)."""

from __future__ import annotations

import numpy as np


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited (FFT) resampling of a mono float waveform."""
    if rate == target:
        return wave
    n_out = int(round(len(wave) * target / rate))
    spec = np.fft.rfft(wave)
    n_bins = n_out // 2 + 1
    out = np.zeros(n_bins, dtype=spec.dtype)
    k = min(n_bins, len(spec))
    out[:k] = spec[:k]
    return (np.fft.irfft(out, n_out) * (n_out / len(wave))).astype(np.float32)
