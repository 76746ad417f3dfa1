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
from dataclasses import dataclass, replace

from vita.errors import ConfigError

IMAGE_TOKEN, VIDEO_TOKEN, AUDIO_TOKEN = "<|image_pad|>", "<|video_pad|>", "<|audio_pad|>"


def vita_encoder_tokens(n_frames: int) -> int:
    """VITA's encoder (Conv2d x4 subsampling): ``(T-1)//2``, then ``(a-1)//2`` frames (at least 1)."""
    return max(1, ((n_frames - 1) // 2 - 1) // 2)


def whisper_encoder_tokens(n_frames: int, window: int) -> int:
    """Whisper's encoder: input cut/padded to ``window`` frames, one stride-2 conv -> ``ceil(T/2)`` tokens."""
    return (min(n_frames, window) - 1) // 2 + 1


def conv_tokens(n: int, kernel: int, stride: int) -> int:
    """VITA's audio adapter: right-pad ``kernel - 1``, then Conv1d(kernel, stride) -> ``ceil(n / stride)`` for stride 2."""
    return (n - 1) // stride + 1


def no_audio_tokens(n_frames: int) -> int:
    """A model without an audio encoder: no positions."""
    return 0


@dataclass(frozen=True)
class AudioTokenCount:
    """Picklable ``n_frames -> <|audio_pad|> positions`` (data workers pickle the spec).

    ``encoder``: ``vita`` or ``whisper`` (``window`` = Whisper's input frames); ``adapter_stride``:
    1 for a token-wise projector (``linear``), else the subsampling adapter's stride; ``prompts``:
    learned audio prompt vectors prepended to each clip.
    """

    encoder: str
    window: int = 3000
    adapter_kernel: int = 5
    adapter_stride: int = 2
    prompts: int = 0

    def count(self, n_frames: int) -> int:
        n = int(n_frames)
        t = vita_encoder_tokens(n) if self.encoder == "vita" else whisper_encoder_tokens(n, self.window)
        if self.adapter_stride > 1:
            t = conv_tokens(t, self.adapter_kernel, self.adapter_stride)
        return t + self.prompts


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

    def with_token_ids(self, tokenizer) -> DataSpec:
        """Fill missing placeholder ids from ``tokenizer`` (each placeholder must be a single token)."""
        ids = {}
        for key, text in (("image_token_id", IMAGE_TOKEN), ("video_token_id", VIDEO_TOKEN),
                          ("audio_token_id", AUDIO_TOKEN)):
            if getattr(self, key) is None:
                got = tokenizer(text, add_special_tokens=False)["input_ids"]
                if len(got) != 1:
                    raise ConfigError(f"the tokenizer splits {text} into {len(got)} tokens; call "
                                      "vita.model.ensure_media_tokens(tokenizer, model) to add it as a special token")
                ids[key] = got[0]
        return replace(self, **ids)
