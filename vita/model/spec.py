"""What the data pipeline needs to know about a model: :class:`DataSpec`.

``OmniModel.data_spec()`` returns one. The pipeline reads it to resize and normalise image
tiles / video frames, to compute audio features of the right kind, and to expand each media
placeholder to exactly as many token positions as the model will fill::

    spec = model.data_spec()
    n_img = tiles * spec.tokens_per_tile                    # <|image_pad|> positions per image
    n_aud = spec.audio_num_tokens(fbank.shape[0])           # <|audio_pad|> positions per clip
"""

from __future__ import annotations

from dataclasses import dataclass

# One contract class, shared with the data pipeline (vita/spec.py).
from vita.spec import AUDIO_TOKEN, IMAGE_TOKEN, VIDEO_TOKEN, DataSpec


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


__all__ = ["AudioTokenCount", "DataSpec", "IMAGE_TOKEN", "VIDEO_TOKEN", "AUDIO_TOKEN"]
