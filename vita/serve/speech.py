"""Where a speech decoder plugs in: spoken answers (``modalities: ["text", "audio"]``).

vita has no speech decoder yet (it is the speech-output issue's work), so :func:`speech_decoder`
returns None and vita.serve answers 400 ``no_speech_decoder`` to a request for audio out. When a
decoder exists, return it here for a model that has one: ``/v1/models`` then lists ``audio`` among
the outputs and the web page asks for spoken answers and plays the ``delta.audio.data`` chunks; the
chat route (``vita/serve/app.py``, where it refuses now) still has to send the decoder's WAV chunks
as ``delta.audio`` (``message.audio`` when not streaming) next to the text transcript.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from vita.infer.load import Loaded


class SpeechDecoder(Protocol):
    """Turns an answer into speech, in chunks as they are produced."""

    def speak(self, text: str) -> Iterator[bytes]:
        """WAV bytes of ``text`` spoken, chunk by chunk (each chunk a whole WAV file)."""
        ...


def speech_decoder(loaded: Loaded) -> SpeechDecoder | None:
    """The speech decoder of ``loaded`` (None: this model cannot answer in speech). The hook."""
    return None
