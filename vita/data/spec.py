"""What the data pipeline needs to know about the model's encoders (the model-data contract).

The model exposes ``model.data_spec()`` returning a :class:`DataSpec`; until a model provides
one, :data:`PRESETS` holds the shapes of the known towers. ``None`` everywhere means text-only.
"""

from __future__ import annotations

from vita.errors import ConfigError
from vita.spec import (  # noqa: F401  (re-exported: the contract lives in vita/spec.py)
    AUDIO_TOKEN,
    IMAGE_TOKEN,
    IMAGENET_MEAN,
    IMAGENET_STD,
    VIDEO_TOKEN,
    AudioTokens,
    DataSpec,
    WhisperEncoderTokens,
    vita_audio_num_tokens,
)

PRESETS: dict[str, DataSpec] = {
    "vita": DataSpec(),
    "whisper": DataSpec(audio_feature="whisper", audio_num_tokens=AudioTokens(WhisperEncoderTokens(3000)),
                        max_audio_frames=3000),
    # 30 s of audio at most, as Whisper: so data work without a model checks the common limit
    "tiny": DataSpec(image_size=28, tokens_per_tile=4, max_audio_frames=3000),
}


def preset(name: str) -> DataSpec:
    """A named :class:`DataSpec` (``data.media_spec``); an unknown name lists the known ones."""
    if name not in PRESETS:
        raise ConfigError(f"data.media_spec={name!r} is unknown; known: {', '.join(PRESETS)}")
    return PRESETS[name]
