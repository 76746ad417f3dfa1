"""Speech out (VITA-1.5 stage 3): codecs that turn speech into discrete codes and back.

``vita.registry.SPEECH_CODECS`` holds them (:mod:`vita.model.speech.codecs`); see docs/SPEECH.md.
"""
