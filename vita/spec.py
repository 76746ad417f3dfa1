"""The model-data contract: :class:`DataSpec`, what the data pipeline needs to know about the model.

``OmniModel.data_spec()`` returns one; ``vita.data.spec.PRESETS`` holds named ones for data work
without a model. The pipeline reads it to resize and normalise image tiles / video frames, to
compute audio features of the right kind, and to expand each media placeholder to exactly as
many token positions as the model fills::

    n_img = tiles * spec.tokens_per_tile              # <|image_pad|> positions per image
    n_aud = spec.audio_num_tokens(fbank.shape[0])     # <|audio_pad|> positions per clip

Each encoder owns its count (``token_count()``: :class:`VitaEncoderTokens`, :class:`WhisperEncoderTokens`),
each projector its own (:class:`SameTokens`, :class:`StridedTokens` ...); the model composes them
(:class:`AudioTokens`) without asking which classes they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass, replace

from vita.errors import ConfigError

IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
AUDIO_TOKEN = "<|audio_pad|>"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vita_audio_num_tokens(n_frames: int) -> int:
    """LLM tokens of one clip as VITA's data code counts them (the ``vita`` preset, without a model):
    ``len(ones(T)[2::2][2::2][0::2])`` (about T/8)."""
    return len(range(n_frames)[2::2][2::2][0::2])


# -- token counts: each encoder and projector returns one of these from ``token_count()`` (picklable, so the
#    data workers that receive the spec can count without the model)
@dataclass(frozen=True)
class SameTokens:
    """A token-wise module: as many out as in."""

    def __call__(self, n: int) -> int:
        return int(n)


@dataclass(frozen=True)
class StridedTokens:
    """A stride-``stride`` Conv1d over an input right-padded by ``kernel - 1``: ``ceil(n / stride)``."""

    kernel: int = 5
    stride: int = 2

    def __call__(self, n: int) -> int:
        return (int(n) - 1) // self.stride + 1


@dataclass(frozen=True)
class VitaEncoderTokens:
    """VITA's audio encoder (Conv2d x4 subsampling): ``(T-1)//2``, then ``(a-1)//2`` frames (at least 1)."""

    def __call__(self, n: int) -> int:
        return max(1, ((int(n) - 1) // 2 - 1) // 2)


@dataclass(frozen=True)
class WhisperEncoderTokens:
    """Whisper's encoder: input cut/padded to ``window`` frames, one stride-2 conv -> ``ceil(T/2)`` tokens."""

    window: int = 3000

    def __call__(self, n: int) -> int:
        return (min(int(n), self.window) - 1) // 2 + 1


@dataclass(frozen=True)
class AudioTokens:
    """``<|audio_pad|>`` positions of a clip: the encoder's count, through the adapter's, plus learned prompts."""

    encoder: Callable[[int], int]
    adapter: Callable[[int], int] = SameTokens()
    prompts: int = 0

    def __call__(self, n_frames: int) -> int:
        return self.adapter(self.encoder(n_frames)) + self.prompts


def no_audio_tokens(n_frames: int) -> int:
    """A model without an audio encoder: no positions."""
    return 0


@dataclass(frozen=True)
class DataSpec:
    """Encoder facts the data side uses to cut media and count placeholder tokens."""

    image_size: int = 448
    """Side of one square tile (and of one video frame)."""
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    tokens_per_tile: int = 256
    """LLM tokens per image tile and per video frame."""
    patch_size: int = 14
    """The vision tower's patch side; an image smaller than one patch is a bad sample."""
    max_audio_frames: int | None = None
    """Most feature frames the audio encoder takes (Whisper: 3000 = 30 s); longer clips are bad samples
    rather than silently cut. ``None`` = no limit."""
    audio_feature: str = "fbank"
    """``fbank`` (Kaldi fbank, VITA's encoder) or ``whisper`` (Whisper log-mel)."""
    n_mels: int = 80
    audio_num_tokens: Callable[[int], int] = field(default=vita_audio_num_tokens)
    """Feature frames of one clip -> LLM tokens (a module-level function, so workers can pickle it)."""
    image_token_id: int | None = None
    video_token_id: int | None = None
    audio_token_id: int | None = None
    speech_codec: tuple | None = None
    """Speech out: ``(codec key, codec folder or None, sorted option items)`` of the model's codec; the data
    side builds it once per worker to turn spoken answers into codes (``None`` = the model does not speak)."""
    speech_max_frames: int = 0
    """Most code frames of one spoken answer (``model.speech.max_seconds`` x the codec's frame rate); 0 = none."""

    def describe(self) -> dict:
        """The spec as JSON-safe fields, its audio count named with its parameters (what cache keys and shard
        fingerprints record: another count is another spec)."""
        fn = self.audio_num_tokens
        out = asdict(replace(self, audio_num_tokens=None))
        out["audio_num_tokens"] = repr(fn) if is_dataclass(fn) else f"{fn.__module__}.{fn.__qualname__}"
        return out

    def with_token_ids(self, tokenizer) -> DataSpec:
        """Fill the placeholder ids from ``tokenizer`` (each placeholder must be one token). A spec without encoders
        (a text-only LLM that speaks: only its speech fields are set) has no placeholders to fill."""
        if self.image_size is None and self.audio_feature is None and not self.tokens_per_tile:
            return self
        ids = {}
        for key, text in (("image_token_id", IMAGE_TOKEN), ("video_token_id", VIDEO_TOKEN),
                          ("audio_token_id", AUDIO_TOKEN)):
            if getattr(self, key) is not None:
                continue
            got = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(got) != 1:
                raise ConfigError(f"the tokenizer splits {text} into {len(got)} tokens; call "
                                  "vita.model.ensure_media_tokens(tokenizer, model) to add it as a special token")
            ids[key] = got[0]
        return replace(self, **ids)
