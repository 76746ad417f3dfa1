"""Tiny speaking models for the speech-inference tests: a loaded tiny LLM with a speech decoder and a codec.

``speaking(loaded)`` attaches ``SPEECH_DECODERS``' ``nar_ar-tiny`` (or the key given) and the ``mel_rvq-tiny``
codec to a :class:`~vita.infer.load.Loaded` model, as ``vita.model.builder`` does from ``cfg.model.speech``.
Where that decoder is not registered (before the decoders branch is merged), :class:`FrameDecoder` stands
in: a real (random) :class:`~vita.model.speech.decoder.SpeechDecoder` that predicts ``per_token`` code
frames per answer token, greedy, yielded in chunks. A random ``nar_ar`` decoder's end-of-speech logit is pushed
down so that it speaks ``max_frames`` (64) frames rather than stopping at random after a few.

``python -m tests.speech_helpers [vita.chat args]`` runs ``vita.chat`` on such a model (the REPL test).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import torch
from torch import nn

from vita.model.speech.decoder import SpeechDecoder


class FrameDecoder(SpeechDecoder):
    """``per_token`` frames of ``codebooks`` codes per text token, from a linear head over hidden + embedding."""

    def __init__(self, llm_hidden: int, codebooks: int, codebook_size: int, per_token: int = 6,
                 max_frames: int = 2000) -> None:
        super().__init__()
        self.codebooks, self.codebook_size, self.max_frames, self.per_token = codebooks, codebook_size, max_frames, per_token
        self.head = nn.Linear(2 * llm_hidden, per_token * codebooks * codebook_size)

    def _logits(self, hidden: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        x = self.head(torch.cat([hidden, embeds], dim=-1))
        return x.view(*hidden.shape[:-1], self.per_token, self.codebooks, self.codebook_size)

    def forward(self, hidden, embeds, text_lengths, codes, code_lengths, codebook_weights=None):
        raise NotImplementedError("FrameDecoder only generates (the speech-inference tests)")

    def dummy_loss(self, like):
        return self.head.weight.sum() * 0

    @torch.no_grad()
    def generate(self, hidden: torch.Tensor, embeds: torch.Tensor, max_frames: int | None = None,
                 chunk: int = 8) -> Iterator[torch.Tensor]:
        limit = max_frames or self.max_frames
        codes = self._logits(hidden, embeds).argmax(-1).reshape(-1, self.codebooks)[:limit]
        for s in range(0, codes.shape[0], chunk):
            yield codes[s:s + chunk]


def speaking(loaded, decoder: str = "nar_ar-tiny", codec: str = "mel_rvq-tiny", replace: bool = False,
             **codec_options):
    """``loaded`` with a random speech decoder and codec attached (its model, changed in place; a model that
    already speaks keeps its own unless ``replace``)."""
    from vita.registry import SPEECH_CODECS, SPEECH_DECODERS, load_builtins

    load_builtins()
    model = loaded.model
    if getattr(model, "speech_decoder", None) is not None and not replace:
        return loaded
    c = SPEECH_CODECS.build(codec, **codec_options)
    hidden = model.llm.config.get_text_config().hidden_size
    torch.manual_seed(0)
    if decoder in SPEECH_DECODERS:
        dec = SPEECH_DECODERS.build(decoder, llm_hidden=hidden, codebooks=c.codebooks, codebook_size=c.codebook_size)
        dec.max_frames = 64
        if hasattr(dec, "out_fnn"):  # nar_ar: a random decoder would say end-of-speech at random; speak to max_frames
            from vita.model.speech.nar_ar import EOS

            with torch.no_grad():
                dec.out_fnn.bias[c.codebooks * c.codebook_size + EOS] = -1e4
    else:
        dec = FrameDecoder(hidden, c.codebooks, c.codebook_size)
    model.speech_decoder = dec.eval()
    model.speech_codec = c
    return loaded


def b64wav(data: str):
    """A base64 WAV (``vita.serve``'s audio parts) -> (float32 samples, rate)."""
    import base64
    import io

    import soundfile as sf

    return sf.read(io.BytesIO(base64.b64decode(data)), dtype="float32")


def main(argv: list[str]) -> int:
    """``vita.chat`` with a speaking tiny model (the same CLI; the model gains decoder + codec after loading)."""
    import vita.chat as chat
    from vita.infer import load as infer_load

    real = infer_load.load_target

    def load_speaking(*a, **k):
        return speaking(real(*a, **k))

    import vita.infer

    vita.infer.load_target = load_speaking
    return chat.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
