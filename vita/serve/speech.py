"""Spoken answers in vita.serve (``modalities: ["text", "audio"]``, ``audio: {"format": "wav"}``).

:func:`speech_decoder` is the hook: for a model with a speech decoder and codec (stage 3.2) it returns a
:class:`Speaker`, else None (a request for audio then gets 400 ``no_speech_decoder``). The batcher speaks the
answers of the rows that asked for audio after their text is done, on the inference path of ``vita.chat --speak``
(:func:`vita.infer.speak.speak_rows`: one LLM forward over prompt + answer, the decoder's code chunks, the codec's
streamed decode). In OpenAI's shape:

* streamed: ``delta.audio = {"id", "data"}`` chunks as the codec produces them, each ``data`` a whole small WAV
  file (base64; the web page plays them in order), then one ``delta.audio = {"id", "transcript",
  "expires_at"}``; the text still streams as ``delta.content``;
* not streamed: ``message.audio = {"id", "data", "transcript", "expires_at"}`` (the whole answer as one WAV)
  next to ``message.content``.

``transcript`` is the answer text the speech was made from (OpenAI's meaning), not an ASR transcript.
"""

from __future__ import annotations

import base64
import io
import time
import uuid
from collections.abc import Callable, Sequence

import torch

from vita.infer import collate_prompts
from vita.infer.load import Loaded
from vita.infer.speak import SpokenAnswer, speak_rows, speech_problem

EXPIRES_S = 3600
"""``expires_at`` is this far ahead (vita keeps nothing: the audio is in the response; the field is OpenAI's)."""


def wav_bytes(wave: torch.Tensor, rate: int) -> bytes:
    """A mono 16-bit WAV file of ``wave`` (float in [-1, 1])."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave.detach().float().clamp(-1, 1).numpy(), int(rate), subtype="PCM_16", format="WAV")
    return buf.getvalue()


def b64_wav(wave: torch.Tensor, rate: int) -> str:
    return base64.b64encode(wav_bytes(wave, rate)).decode()


class Speaker:
    """Speaks finished answers of a batch (called on the batcher's generation thread)."""

    def __init__(self, loaded: Loaded, chunk: int = 8) -> None:
        self.loaded, self.chunk = loaded, chunk

    def speak(self, items: Sequence[dict], rows: Sequence[Sequence[int]]) -> list[SpokenAnswer]:
        """The spoken answers of prompt ``items`` (as queued) whose answers are ``rows`` (token ids)."""
        batch = collate_prompts(list(items), self.loaded.pad_id)
        return speak_rows(self.loaded.model, batch, rows, self.loaded.pad_id, self.chunk)

    def stream(self, spoken: SpokenAnswer, text: str, emit: Callable[[tuple], None], streaming: bool,
               cancelled: Callable[[], bool]) -> dict | None:
        """Send ``spoken`` as ``("audio", part)`` events (streaming) or return the whole ``message.audio``
        (not streaming). Stops early when ``cancelled()``; returns None then."""
        aid = f"audio_{uuid.uuid4().hex}"
        expires = int(time.time()) + EXPIRES_S
        pieces = []
        for piece in spoken:
            if cancelled():
                return None
            if streaming:
                emit(("audio", {"id": aid, "data": b64_wav(piece, spoken.sample_rate)}))
            else:
                pieces.append(piece)
        if streaming:
            emit(("audio", {"id": aid, "transcript": text, "expires_at": expires}))
            return None
        return {"id": aid, "data": b64_wav(torch.cat([torch.zeros(0), *pieces]), spoken.sample_rate),
                "transcript": text, "expires_at": expires}


def speech_decoder(loaded: Loaded) -> Speaker | None:
    """The :class:`Speaker` of ``loaded`` (None: this model cannot answer in speech). The hook."""
    return Speaker(loaded) if speech_problem(loaded.model) is None else None
