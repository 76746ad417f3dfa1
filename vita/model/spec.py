"""What the data pipeline needs to know about a model: :class:`DataSpec`.

``OmniModel.data_spec()`` returns one. The pipeline reads it to resize and normalise image
tiles / video frames, to compute audio features of the right kind, and to expand each media
placeholder to exactly as many token positions as the model will fill::

    spec = model.data_spec()
    n_img = tiles * spec.tokens_per_tile                    # <|image_pad|> positions per image
    n_aud = spec.audio_num_tokens(fbank.shape[0])           # <|audio_pad|> positions per clip
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class DataSpec:
    image_size: int | None
    """Side of a square tile / video frame in pixels (``pixel_values`` is [N, 3, S, S]); None = no vision."""
    image_mean: tuple[float, float, float] | None
    """Per-channel mean subtracted after scaling pixels to [0, 1]."""
    image_std: tuple[float, float, float] | None
    """Per-channel std divided by after subtracting the mean."""
    tokens_per_tile: int
    """``<|image_pad|>`` / ``<|video_pad|>`` positions one tile or frame fills (0 = no vision)."""
    audio_feature: str | None
    """``"fbank"`` (Kaldi fbank, 25 ms / 10 ms, waveform x 2^15) or ``"whisper"`` (Whisper log-mel); None = no audio."""
    n_mels: int
    """Mel bins per audio frame (``audio_features`` is [A, T_max, n_mels])."""
    audio_num_tokens: Callable[[int], int]
    """Number of ``<|audio_pad|>`` positions a clip of ``n_frames`` feature frames fills."""
    image_token_id: int | None
    """Id of ``<|image_pad|>`` (None until the tokenizer is attached with ``ensure_media_tokens``)."""
    video_token_id: int | None
    """Id of ``<|video_pad|>``."""
    audio_token_id: int | None
    """Id of ``<|audio_pad|>``."""
