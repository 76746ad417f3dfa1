"""AUDIO_ENCODERS: audio features [A, T, n_mels] + lengths [A] -> features [A, T', C] + lengths [A].

- ``vita``: VITA-1.5's encoder (:mod:`vita.model.whale`; 24 x 1024, ~358 M) on Kaldi fbank-80.
  ``pretrained`` = the released ``final.pt`` (or a safetensors file); its ``global_cmvn`` stats
  file is read from the same folder when present.
- ``whisper``: transformers' Whisper encoder on Whisper log-mel. ``pretrained`` = a transformers
  Whisper folder, or ``ct2:<folder>`` for a CTranslate2 ``model.bin`` (converted and cached,
  :mod:`vita.model.whisper_ct2`). Clips are padded to Whisper's fixed 30 s window.
- ``tiny-*``: 2-layer, 32-wide versions for CPU tests.

Every entry returns an :class:`AudioEncoder`, which knows its feature kind (``feature``,
``n_mels``), its token count per clip (``num_tokens``) and makes a dummy clip (``dummy_inputs``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vita.model.weights import load_strict, read_state_dict, strip_prefix
from vita.model.whale import WhaleEncoder, from_upstream
from vita.registry import AUDIO_ENCODERS
from vita.spec import VitaEncoderTokens, WhisperEncoderTokens


class AudioEncoder(nn.Module):
    """Common wrapper. ``feature`` is ``"fbank"`` or ``"whisper"``; ``hidden_size`` is the output width."""

    feature: str = "fbank"

    def __init__(self, n_mels: int, hidden_size: int) -> None:
        super().__init__()
        self.n_mels, self.hidden_size = n_mels, hidden_size

    def token_count(self) -> Callable[[int], int]:
        """This encoder's ``feature frames -> output tokens`` (picklable: the data spec carries it)."""
        raise NotImplementedError

    def num_tokens(self, n_frames: int) -> int:
        return self.token_count()(n_frames)

    def dummy_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One all-zero clip of 400 frames (VITA's dummy audio), for ranks whose batch has no audio."""
        p = next(self.parameters())
        return torch.zeros(1, 400, self.n_mels, device=p.device, dtype=p.dtype), torch.tensor([400], device=p.device)


class VitaAudioEncoder(AudioEncoder):
    feature = "fbank"

    def __init__(self, n_mels: int = 80, d: int = 1024, heads: int = 16, ffn: int = 4096, layers: int = 24,
                 dropout: float = 0.1, chunk_size: int = 0) -> None:
        super().__init__(n_mels, d)
        self.encoder = WhaleEncoder(n_mels, d, heads, ffn, layers, dropout, chunk_size)

    def token_count(self) -> VitaEncoderTokens:
        return VitaEncoderTokens()

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(features.to(next(self.parameters()).dtype), lengths)

    def load_pretrained(self, path: str | Path) -> None:
        """Load the encoder part of ``final.pt`` (keys ``encoder.*`` or bare) and ``global_cmvn`` next to it."""
        sd = read_state_dict(path)
        enc = {k: v for k, v in sd.items() if not k.startswith("adpter.") and not k.startswith("audio_encoder.adpter.")}
        enc = strip_prefix(enc, ("audio_encoder.encoder.", "model.audio_encoder.encoder.", "encoder."))
        enc = {from_upstream(k): v for k, v in enc.items()}  # VITA's enc.0.core.* -> vita's enc.0.*
        cmvn_file = Path(path).parent / "global_cmvn"
        if "global_cmvn.mean" not in enc and cmvn_file.is_file():
            self.encoder.global_cmvn.load_stats(cmvn_file)
            enc["global_cmvn.mean"], enc["global_cmvn.istd"] = self.encoder.global_cmvn.mean, self.encoder.global_cmvn.istd
        load_strict(self.encoder, enc, f"audio encoder ({path})")


VITA_AUDIO = dict(n_mels=80, d=1024, heads=16, ffn=4096, layers=24, dropout=0.1, chunk_size=0)


def _vita(cfg: dict, pretrained: str | None) -> VitaAudioEncoder:
    enc = VitaAudioEncoder(**cfg)
    if pretrained:
        enc.load_pretrained(pretrained)
    return enc


@AUDIO_ENCODERS.register("vita")
def vita(pretrained: str | None = None, **overrides: Any) -> AudioEncoder:
    """VITA-1.5's encoder: CMVN, Conv2d x4 subsampling, 24 rel-pos blocks, width 1024, 16 heads, FFN 4096."""
    return _vita({**VITA_AUDIO, **overrides}, pretrained)


@AUDIO_ENCODERS.register("tiny-vita")
def tiny_vita(pretrained: str | None = None, **overrides: Any) -> AudioEncoder:
    """2 blocks, width 32, 2 heads, FFN 64."""
    return _vita({**VITA_AUDIO, "d": 32, "heads": 2, "ffn": 64, "layers": 2, **overrides}, pretrained)


class WhisperAudioEncoder(AudioEncoder):
    feature = "whisper"

    def __init__(self, config) -> None:
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        super().__init__(config.num_mel_bins, config.d_model)
        self.window = 2 * config.max_source_positions  # input frames Whisper expects (3000 = 30 s)
        self.encoder = WhisperEncoder(config)

    def token_count(self) -> WhisperEncoderTokens:
        return WhisperEncoderTokens(self.window)

    def dummy_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        p = next(self.parameters())
        n = min(400, self.window)
        return torch.zeros(1, n, self.n_mels, device=p.device, dtype=p.dtype), torch.tensor([n], device=p.device)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = features.to(next(self.parameters()).dtype)[:, : self.window]
        # pad each clip with its floor value (what Whisper's own extractor gives for silence), past its own
        # end too (batch padding), so a clip encodes the same alone or batched
        valid = (torch.arange(x.shape[1], device=x.device) < lengths.to(x.device).unsqueeze(1)).unsqueeze(-1)
        floor = torch.where(valid, x, torch.inf).amin(dim=(1, 2), keepdim=True)
        x = torch.where(valid, x, floor).transpose(1, 2)  # [A, n_mels, T]
        if x.shape[-1] < self.window:
            x = torch.cat([x, floor.expand(-1, x.shape[1], self.window - x.shape[-1])], dim=-1)
        out = self.encoder(input_features=x).last_hidden_state
        n = (lengths.to(out.device).clamp(max=self.window) - 1) // 2 + 1  # WhisperEncoderTokens, on the device
        return out, n


def _whisper(config_kw: dict, pretrained: str | None) -> WhisperAudioEncoder:
    from transformers import WhisperConfig

    if pretrained:
        folder = pretrained
        if pretrained.startswith("ct2:"):
            from vita.model.whisper_ct2 import converted_whisper

            folder = str(converted_whisper(pretrained[4:]))
        config = WhisperConfig.from_pretrained(folder)
        enc = WhisperAudioEncoder(config)
        sd = {k[len("model.encoder."):]: v for k, v in read_state_dict(folder).items() if k.startswith("model.encoder.")}
        load_strict(enc.encoder, sd, f"whisper encoder ({folder})")
        return enc
    return WhisperAudioEncoder(WhisperConfig(**config_kw))


WHISPER_TINY = dict(num_mel_bins=80, d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6,
                    decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536, max_source_positions=1500)


@AUDIO_ENCODERS.register("whisper")
def whisper(pretrained: str | None = None, **overrides: Any) -> AudioEncoder:
    """Whisper encoder (tiny.en shapes unless ``pretrained`` says otherwise): 50 tokens per second."""
    return _whisper({**WHISPER_TINY, **overrides}, pretrained)


@AUDIO_ENCODERS.register("tiny-whisper")
def tiny_whisper(pretrained: str | None = None, **overrides: Any) -> AudioEncoder:
    """2 layers, width 32, a 2 s window (200 frames)."""
    return _whisper({**WHISPER_TINY, "d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2,
                     "encoder_ffn_dim": 64, "max_source_positions": 100, **overrides}, pretrained)


__all__ = ["AUDIO_ENCODERS", "AudioEncoder", "VitaAudioEncoder", "WhisperAudioEncoder"]
