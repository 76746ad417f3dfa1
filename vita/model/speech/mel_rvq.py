"""``mel_rvq``: vita's own offline speech codec — log-mel frames, a residual VQ fitted by vita, Griffin-Lim.

* **Encode**: resample to ``sample_rate`` (16 kHz), STFT (Hann window ``n_fft``, hop ``hop``, centred),
  magnitude -> mel filterbank (slaney, ``n_mels`` bands, ``fmin``-``fmax``) -> ``log(max(mel, 1e-5))``:
  one frame per ``hop`` samples (62.5 Hz at 16 kHz / 256). A residual VQ of ``codebooks`` stages, each
  of ``codebook_size`` entries, codes every frame: stage k picks the entry nearest (L2) to what the
  stages before it left.
* **Decode**: sum of the chosen entries -> mel -> linear magnitude through the pseudo-inverse of the
  filterbank (clamped at 0) -> Griffin-Lim (``gl_iters`` iterations with momentum 0.99, written with
  ``torch.stft``/``torch.istft``) -> waveform. Blocks of ``block`` frames with ``context`` frames each side;
  each block starts its phases from the previous block's over the frames they share, then joins it
  with a ``crossfade``-sample fade (see :mod:`vita.model.speech.base`).
* **Fit** (:func:`fit_mel_rvq`, the miniature of VITA-1.5's stage 3.1): k-means (k-means++ seeding,
  Lloyd iterations) of each stage on the residuals of real speech frames.
* **Files**: ``config.json`` (the options below) + ``codebooks.safetensors`` (``codebooks`` [stages, size, n_mels]).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vita.errors import ConfigError
from vita.model.speech.base import BlockStream, SpeechCodec
from vita.signal import resample

CONFIG_FILE, WEIGHTS_FILE = "config.json", "codebooks.safetensors"


@dataclass(kw_only=True)
class MelRVQConfig:
    sample_rate: int = 16000
    """Rate the codec reads (after resampling) and writes."""
    n_fft: int = 1024
    hop: int = 256
    """Samples per code frame (frame rate = sample_rate / hop)."""
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0
    codebooks: int = 4
    """Residual VQ stages (codes per frame)."""
    codebook_size: int = 256
    gl_iters: int = 32
    """Griffin-Lim iterations per block."""
    block: int = 32
    """Frames decoded per block (streaming granularity)."""
    context: int = 8
    """Frames of context decoded on each side of a block."""
    crossfade: int = 256
    """Samples over which neighbouring blocks are faded into each other."""
    seed: int = 0
    """Seed of the random (unfitted) codebooks and of Griffin-Lim's first phases."""


TINY = {"n_fft": 256, "hop": 64, "n_mels": 20, "codebooks": 2, "codebook_size": 16, "gl_iters": 4, "block": 8,
        "context": 2, "crossfade": 64}


def mel_filters(cfg: MelRVQConfig) -> torch.Tensor:
    """[n_fft // 2 + 1, n_mels] slaney mel filterbank (transformers' audio utilities)."""
    from transformers.audio_utils import mel_filter_bank

    return torch.from_numpy(mel_filter_bank(num_frequency_bins=cfg.n_fft // 2 + 1, num_mel_filters=cfg.n_mels,
                                            min_frequency=cfg.fmin, max_frequency=min(cfg.fmax, cfg.sample_rate / 2),
                                            sampling_rate=cfg.sample_rate, norm="slaney", mel_scale="slaney")).float()


class MelRVQCodec(SpeechCodec):
    """Log-mel frames, residual VQ, Griffin-Lim (see the module docstring)."""

    name = "mel_rvq"

    def __init__(self, cfg: MelRVQConfig, codebooks: torch.Tensor | None = None) -> None:
        if cfg.context * cfg.hop < cfg.crossfade:
            raise ConfigError(f"mel_rvq: crossfade {cfg.crossfade} samples needs context * hop >= it "
                              f"(context {cfg.context}, hop {cfg.hop})")
        self.cfg = cfg
        self.sample_rate, self.codebooks, self.codebook_size = cfg.sample_rate, cfg.codebooks, cfg.codebook_size
        self.frame_rate = cfg.sample_rate / cfg.hop
        self.block, self.left, self.right, self.crossfade = cfg.block, cfg.context, cfg.context, cfg.crossfade
        self.window = torch.hann_window(cfg.n_fft)
        self.filters = mel_filters(cfg)
        self.inverse = torch.linalg.pinv(self.filters)  # [n_mels, freq]
        if codebooks is None:  # unfitted: random entries around typical log-mel values (fit them: fit_mel_rvq)
            g = torch.Generator().manual_seed(cfg.seed)
            scale = torch.tensor([2.0 / (k + 1) for k in range(cfg.codebooks)]).view(-1, 1, 1)
            codebooks = torch.randn(cfg.codebooks, cfg.codebook_size, cfg.n_mels, generator=g) * scale
            codebooks[0] -= 5.0
        want = (cfg.codebooks, cfg.codebook_size, cfg.n_mels)
        if tuple(codebooks.shape) != want:
            raise ConfigError(f"mel_rvq: codebooks have shape {list(codebooks.shape)}, the config says {list(want)}")
        self.table = codebooks.float()

    @property
    def samples_per_frame(self) -> int:
        return self.cfg.hop

    # ------------------------------------------------------------------ features and codes
    def logmel(self, wave: torch.Tensor, rate: int) -> torch.Tensor:
        """[frames, n_mels] log-mel of a mono waveform (resampled to ``sample_rate``)."""
        wave = self.check_wave(wave, rate)
        if rate != self.sample_rate:
            wave = torch.from_numpy(resample(wave.numpy().astype(np.float32), rate, self.sample_rate))
        if wave.numel() <= self.cfg.n_fft // 2:
            wave = torch.nn.functional.pad(wave, (0, self.cfg.n_fft // 2 + 1 - wave.numel()))
        spec = torch.stft(wave, self.cfg.n_fft, self.cfg.hop, window=self.window, center=True, return_complex=True)
        return torch.log(torch.clamp(spec.abs().T @ self.filters, min=1e-5))

    def quantize(self, frames: torch.Tensor) -> torch.Tensor:
        """[frames, n_mels] -> codes [frames, codebooks] (residual nearest neighbours)."""
        residual, codes = frames.float(), []
        for table in self.table:
            idx = torch.cdist(residual, table).argmin(dim=1)
            codes.append(idx)
            residual = residual - table[idx]
        return torch.stack(codes, dim=1)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [frames, codebooks] -> log-mel [frames, n_mels]."""
        return sum(self.table[k][codes[:, k]] for k in range(self.codebooks))

    def encode(self, wave: torch.Tensor, rate: int) -> torch.Tensor:
        return self.quantize(self.logmel(wave, rate))

    # ------------------------------------------------------------------ Griffin-Lim
    def decode_span(self, codes: torch.Tensor, start: int, state: Any) -> tuple[torch.Tensor, Any]:
        return self.griffin_lim(self.dequantize(codes), start, state)

    def decode_logmel(self, logmel: torch.Tensor) -> torch.Tensor:
        """Unquantised log-mel frames [frames, n_mels] through the same blockwise Griffin-Lim as :meth:`decode`
        (the codec's quality ceiling: what the vocoder alone costs)."""
        stream = BlockStream(self, span=self.griffin_lim)
        return torch.cat([stream.push(logmel.float()), stream.finish()])

    def griffin_lim(self, logmel: torch.Tensor, start: int = 0, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Waveform (``frames * hop`` samples) of log-mel frames ``logmel`` [frames, n_mels] whose first frame is
        frame ``start``; ``state`` = (start, phases) of the previous span seeds the phases of shared frames."""
        cfg, n = self.cfg, logmel.shape[0]
        mag = torch.clamp(torch.exp(logmel) @ self.inverse, min=0).T  # [freq, n]
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + start)
        phase = torch.exp(2j * math.pi * torch.rand(mag.shape, generator=g)).to(torch.complex64)
        if state is not None:  # the previous span's final phases over the frames both spans hold
            prev_start, prev_phase = state
            lo, hi = start, min(prev_start + prev_phase.shape[1], start + n)
            if hi > lo:
                phase[:, : hi - lo] = prev_phase[:, lo - prev_start: hi - prev_start]
        length = n * cfg.hop
        pad_mode = "reflect" if length > cfg.n_fft // 2 else "constant"  # a span of a frame or two is shorter than the pad
        prev = torch.zeros_like(phase)
        for _ in range(cfg.gl_iters):
            wave = torch.istft(mag * phase, cfg.n_fft, cfg.hop, window=self.window, center=True, length=length)
            spec = torch.stft(wave, cfg.n_fft, cfg.hop, window=self.window, center=True, pad_mode=pad_mode,
                              return_complex=True)[:, :n]
            accel = spec + 0.99 * (spec - prev)  # fast Griffin-Lim: extrapolate the projection
            prev = spec
            phase = accel / torch.clamp(accel.abs(), min=1e-8)
        wave = torch.istft(mag * phase, cfg.n_fft, cfg.hop, window=self.window, center=True, length=length)
        return wave, (start, phase)

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path) -> Path:
        """Write ``config.json`` + ``codebooks.safetensors`` to ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(json.dumps({"codec": "mel_rvq", **asdict(self.cfg)}, indent=1) + "\n")
        save_file({"codebooks": self.table.contiguous()}, str(folder / WEIGHTS_FILE))
        return folder


def make_config(overrides: dict[str, Any], where: str = "mel_rvq") -> MelRVQConfig:
    known = {f.name for f in fields(MelRVQConfig)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(bad)}; it takes: {', '.join(sorted(known))}")
    return MelRVQConfig(**overrides)


def load_mel_rvq(folder: str | Path, **overrides: Any) -> MelRVQCodec:
    """A fitted codec from ``folder`` (``config.json`` + ``codebooks.safetensors``); ``overrides`` change
    decode-side options (``gl_iters``, ``block`` ...), never the shapes."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise ConfigError(f"{folder}: not a mel_rvq codec folder (needs {CONFIG_FILE} and {WEIGHTS_FILE}; write one "
                          "with fit_mel_rvq(...).save(folder))")
    cfg = json.loads((folder / CONFIG_FILE).read_text())
    cfg.pop("codec", None)
    cfg.update(overrides)
    return MelRVQCodec(make_config(cfg, str(folder / CONFIG_FILE)), load_file(str(folder / WEIGHTS_FILE))["codebooks"])


def _kmeans(x: torch.Tensor, k: int, iters: int, g: torch.Generator) -> torch.Tensor:
    """k-means++ seeding then Lloyd iterations; an emptied cluster takes the point farthest from its centre."""
    n = x.shape[0]
    centres = [x[torch.randint(n, (1,), generator=g)].squeeze(0)]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        i = torch.multinomial(d2 + 1e-12, 1, generator=g)
        centres.append(x[i].squeeze(0))
        d2 = torch.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
    c = torch.stack(centres)
    for _ in range(iters):
        dist = torch.cdist(x, c)
        idx = dist.argmin(1)
        sums = torch.zeros_like(c).index_add_(0, idx, x)
        counts = torch.bincount(idx, minlength=k).float()
        far = dist.gather(1, idx[:, None]).squeeze(1).argsort(descending=True)
        empty = (counts == 0).nonzero().flatten()
        c = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], c)
        if len(empty):
            c[empty] = x[far[: len(empty)]]
    return c


def fit_mel_rvq(waves: list[tuple[torch.Tensor, int]], iters: int = 20, max_frames: int = 50_000,
                **overrides: Any) -> MelRVQCodec:
    """Fit the residual VQ on the log-mel frames of ``waves`` (``(wave, rate)`` pairs of real speech)."""
    cfg = make_config(overrides)
    codec = MelRVQCodec(cfg)
    frames = torch.cat([codec.logmel(w, r) for w, r in waves])
    g = torch.Generator().manual_seed(cfg.seed)
    if frames.shape[0] > max_frames:
        frames = frames[torch.randperm(frames.shape[0], generator=g)[:max_frames]]
    if frames.shape[0] < cfg.codebook_size:
        raise ConfigError(f"mel_rvq: {frames.shape[0]} speech frames cannot fit {cfg.codebook_size} codebook entries "
                          "(give more speech or a smaller codebook_size)")
    residual, tables = frames, []
    for _ in range(cfg.codebooks):
        table = _kmeans(residual, cfg.codebook_size, iters, g)
        residual = residual - table[torch.cdist(residual, table).argmin(1)]
        tables.append(table)
    return MelRVQCodec(cfg, torch.stack(tables))
