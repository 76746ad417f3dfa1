"""Dataset formats: a ``cfg.data`` -> a list of raw samples (VITA-style dicts)."""

from __future__ import annotations

from vita.registry import DATASETS


@DATASETS.register("chatterbot")
def chatterbot(data_cfg) -> list[dict]:
    """The chatterbot-corpus conversations bundled as the demo data."""
    from vita.data.chatterbot import load_conversations

    return load_conversations(data_cfg.language, list(data_cfg.files) or None)
