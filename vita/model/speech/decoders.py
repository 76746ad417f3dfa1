"""Speech decoders (``vita.registry.SPEECH_DECODERS``): see :mod:`vita.model.speech.decoder` for the contract."""

from __future__ import annotations
