"""Token generation: the one loop lives in :mod:`vita.model.generate` (``OmniModel.generate`` is its tensor
front, and the model layer imports nothing above it); inference, evaluation and serving import it from here."""

from vita.model.generate import GenerationConfig, generate, stop_sequences

__all__ = ["GenerationConfig", "generate", "stop_sequences"]
