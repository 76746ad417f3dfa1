"""Neural codecs whose model code ships in transformers, loaded from a local or hub folder.

* ``mimi`` (``MimiModel``, Kyutai's codec of Moshi): 24 kHz, 12.5 Hz, up to 32 codebooks of 2,048
  (``num_quantizers`` picks how many are used; Moshi uses 8).
* ``encodec`` (``EncodecModel``): 24 kHz, 75 Hz, codebooks of 1,024; ``bandwidth`` (kbps) sets how many
  (1.5 -> 2 ... 24 -> 32).

Weights come from the folder (``save_pretrained`` layout, safetensors); no ``trust_remote_code``.
Decoding is blockwise (:mod:`vita.model.speech.base`): both decoders are causal convolution stacks
(Mimi adds a causal transformer), so each block is decoded with ``left`` frames of past codes,
``right`` frames of look-ahead and a cross-fade; a block therefore matches the model's one-shot decode
only approximately (the model sees ``left`` frames of past, not all of it), while streamed and whole
decode through vita are identical. ``TINY_CONFIGS`` are small random configurations for tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vita.errors import ConfigError
from vita.model.speech.base import SpeechCodec
from vita.signal import resample

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "mimi": {"hidden_size": 64, "num_filters": 4, "num_hidden_layers": 1, "intermediate_size": 64,
             "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 32, "codebook_dim": 16,
             "codebook_size": 64, "num_quantizers": 4, "num_semantic_quantizers": 1, "sliding_window": 16,
             "num_residual_layers": 1, "upsample_groups": 64,
             "vector_quantization_hidden_dimension": 16},
    "encodec": {"hidden_size": 16, "num_filters": 4, "num_lstm_layers": 1, "codebook_size": 64, "codebook_dim": 16,
                "num_residual_layers": 1},
}


def _load(kind: str, path: str | Path, dtype: torch.dtype = torch.float32):
    from transformers import EncodecModel, MimiModel

    cls = {"mimi": MimiModel, "encodec": EncodecModel}[kind]
    try:
        return cls.from_pretrained(str(path), dtype=dtype).eval()
    except (OSError, ValueError) as e:
        raise ConfigError(f"speech codec {kind}: cannot load {path} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); give a folder written by "
                          f"{cls.__name__}.save_pretrained or a hub id whose files are cached") from None


def save_tiny(kind: str, folder: str | Path, seed: int = 0) -> Path:
    """Write a small randomly initialised ``kind`` codec to ``folder`` (tests; no weights needed)."""
    from transformers import EncodecConfig, EncodecModel, MimiConfig, MimiModel

    torch.manual_seed(seed)
    cfg_cls, cls = {"mimi": (MimiConfig, MimiModel), "encodec": (EncodecConfig, EncodecModel)}[kind]
    cls(cfg_cls(**TINY_CONFIGS[kind])).save_pretrained(str(folder))
    return Path(folder)


class HFCodec(SpeechCodec):
    """A transformers codec (``mimi`` or ``encodec``) behind vita's codec interface."""

    def __init__(self, kind: str, path: str | Path, *, num_quantizers: int | None = None,
                 bandwidth: float | None = None, block: int = 4, left: int = 8, right: int = 1,
                 crossfade: int | None = None) -> None:
        self.name, self.kind = kind, kind
        self.model = _load(kind, path)
        cfg = self.model.config
        self.sample_rate, self.codebook_size = int(cfg.sampling_rate), int(cfg.codebook_size)
        self.frame_rate = float(cfg.frame_rate)
        if kind == "mimi":
            n = num_quantizers or min(8, cfg.num_quantizers)  # Moshi's 8 by default
            if not 1 <= n <= cfg.num_quantizers:
                raise ConfigError(f"mimi: num_quantizers {n} outside 1..{cfg.num_quantizers} (this checkpoint)")
            self.codebooks, self.bandwidth = n, None
        else:
            bws = list(cfg.target_bandwidths)
            self.bandwidth = bandwidth if bandwidth is not None else bws[0]
            if self.bandwidth not in bws:
                raise ConfigError(f"encodec: bandwidth {self.bandwidth} not one of this checkpoint's {bws}")
            self.codebooks = int(self.model.quantizer.get_num_quantizers_for_bandwidth(self.bandwidth))
        self.block, self.left, self.right = block, left, right
        self.crossfade = self.samples_per_frame // 2 if crossfade is None else crossfade
        if self.left * self.samples_per_frame < self.crossfade:
            raise ConfigError(f"{kind}: crossfade {self.crossfade} needs left * samples_per_frame >= it")

    @torch.no_grad()
    def encode(self, wave: torch.Tensor, rate: int) -> torch.Tensor:
        wave = self.check_wave(wave, rate)
        if rate != self.sample_rate:
            wave = torch.from_numpy(resample(wave.numpy(), rate, self.sample_rate))
        x = wave.view(1, 1, -1)
        if self.kind == "mimi":
            codes = self.model.encode(x, num_quantizers=self.codebooks).audio_codes[0]  # [K, T]
        else:
            codes = self.model.encode(x, bandwidth=self.bandwidth).audio_codes[0, 0]  # [K, T]
        return codes.T.contiguous().long()

    @torch.no_grad()
    def decode_span(self, codes: torch.Tensor, start: int, state: Any) -> tuple[torch.Tensor, Any]:
        c = codes.T.unsqueeze(0)  # [1, K, n]
        if self.kind == "mimi":
            wave = self.model.decode(c).audio_values
        else:
            wave = self.model.decode(c.unsqueeze(0), [None]).audio_values
        wave = wave.reshape(-1).float()
        n = codes.shape[0] * self.samples_per_frame
        wave = wave[:n] if wave.numel() >= n else torch.nn.functional.pad(wave, (0, n - wave.numel()))
        return wave, None
