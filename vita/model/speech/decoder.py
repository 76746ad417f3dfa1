"""What every speech decoder offers (``vita.registry.SPEECH_DECODERS``; entries in :mod:`vita.model.speech.decoders`).

A speech decoder reads, for each spoken answer, the frozen LLM's last hidden states over the answer's text
tokens and those tokens' input embeddings (both ``[T, llm_hidden]``, gathered by
:func:`vita.model.speech.spans.gather_spans`, the one function training and inference use), and predicts the
codec codes of the answer's speech (``[F, codebooks]``, each in ``[0, codebook_size)``).

Training calls :meth:`SpeechDecoder.forward` on a padded batch of answers and gets a loss *sum* and the number
of code frames it covers; the engine divides by the frame count of the whole global batch (all ranks, all
accumulation steps), as it does for text tokens. A rank whose batch holds no spoken answer calls
:meth:`SpeechDecoder.dummy_loss` and adds 0 x it (every rank calls every trainable module: ZeRO-3).
Inference calls :meth:`SpeechDecoder.generate`, which yields code chunks as soon as they are decided, so the
codec can decode the first audio before the whole answer's codes exist.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import fields

import torch
from torch import nn

from vita.errors import ConfigError

SHAPE_FROM_CODEC = ("llm_hidden", "codebooks", "codebook_size")
"""Constructor fields every decoder config starts with, set by the model (LLM width) and the codec."""


def checked_config(cls: type, what: str, llm_hidden: int, codebooks: int, codebook_size: int, overrides: dict):
    """``cls(llm_hidden, codebooks, codebook_size, **overrides)``; an unknown option is one line listing the known."""
    names = {f.name for f in fields(cls)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise ConfigError(f"{what} speech decoder: unknown option(s) {bad}; it takes {sorted(names - set(SHAPE_FROM_CODEC))}")
    return cls(int(llm_hidden), int(codebooks), int(codebook_size), **overrides)


class SpeechDecoder(nn.Module):
    """Base class: LLM hidden states + text embeddings of an answer -> codec codes."""

    codebooks: int
    """Codes per frame (the codec's ``codebooks``)."""
    codebook_size: int
    """Every code lies in ``[0, codebook_size)`` (the codec's ``codebook_size``)."""
    max_frames: int
    """Most code frames one answer may have (longer answers are refused at data time, never cut)."""

    @abstractmethod
    def forward(self, hidden: torch.Tensor, embeds: torch.Tensor, text_lengths: torch.Tensor, codes: torch.Tensor,
                code_lengths: torch.Tensor, codebook_weights: list[float] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss of a batch of spoken answers.

        Args:
            hidden, embeds: ``[N, T, llm_hidden]`` padded, the answers' last hidden states and token embeddings.
            text_lengths: ``[N]`` valid text positions per answer.
            codes: ``[N, F, codebooks]`` long, padded; ``code_lengths`` ``[N]`` valid frames per answer.
            codebook_weights: loss weight per codebook (``None`` = 1 each).

        Returns: ``(loss_sum, frames)``: the summed loss (fp32 scalar) and the number of valid code frames.
        """

    @abstractmethod
    def dummy_loss(self, like: torch.Tensor) -> torch.Tensor:
        """A scalar that runs every parameter on a one-token, one-frame input (device/dtype of ``like``); the
        caller adds 0 x it when its batch has no spoken answer."""

    @abstractmethod
    def generate(self, hidden: torch.Tensor, embeds: torch.Tensor, max_frames: int | None = None,
                 chunk: int = 8) -> Iterator[torch.Tensor]:
        """Greedy codes of one answer (``hidden``, ``embeds``: ``[T, llm_hidden]``), yielded in chunks of at most
        ``chunk`` frames (``[n, codebooks]`` long) as soon as they are final; their concatenation does not
        depend on ``chunk``."""
