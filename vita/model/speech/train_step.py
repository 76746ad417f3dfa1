"""The speech decoder's share of a training forward (stage 3.2): spans -> decoder loss, or 0 x its dummy.

:meth:`vita.model.omni.OmniModel.forward` calls :func:`speech_loss` with the LLM's last hidden states when the
model has a speech decoder. The answers' hidden states and token embeddings come from
:func:`vita.model.speech.spans.gather_spans` (the one span function; inference calls it too). A micro-batch
without a spoken answer still runs every decoder parameter, times 0: under ZeRO-3 every rank must gather the same
modules in the same order, so a rank that skipped the decoder would hang its peers. Its stand-in answer (one token,
one frame of code 0) is cut by ``gather_spans`` like a real one, because that also runs the LLM's input embedding:
the decoder's own ``dummy_loss`` alone would leave the embedding's ZeRO-3 gather to the ranks with an answer, and
the ranks' collectives would no longer match (a gloo abort, an NCCL hang: tests/test_stage32.py).
"""

from __future__ import annotations

import torch
from torch import nn

from vita.errors import DataError
from vita.model.speech.spans import gather_spans


def speech_frames(batch: dict) -> int:
    """Code frames of the spoken answers in a (host) micro-batch: what the engine normalises the loss by."""
    lengths = batch.get("speech_code_lengths")
    return 0 if lengths is None else int(lengths.sum())


def speech_loss(decoder: nn.Module, hidden: torch.Tensor, input_ids: torch.Tensor, embed: nn.Module,
                codes: torch.Tensor | None, code_lengths: torch.Tensor | None, spans: torch.Tensor | None,
                codebook_weights: list[float] | None = None, sample_ids: list[str] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | int]:
    """``(loss_sum, frames)`` of a micro-batch's spoken answers.

    Args:
        decoder: a :class:`~vita.model.speech.decoder.SpeechDecoder`.
        hidden: ``[B, L, H]`` the LLM's last hidden states (teacher-forced over prompt + answer).
        input_ids: ``[B, L]``; ``embed``: the LLM's input embedding module.
        codes, code_lengths, spans: the collate keys ``speech_codes [S, F, K]``, ``speech_code_lengths [S]``,
            ``speech_spans [S, 3]`` (``row, start, end``); None (or ``S == 0``) = no spoken answer here.
        codebook_weights: loss weight per codebook (``cfg.model.speech.codebook_weights``; empty = 1 each).
        sample_ids: the batch's sample names, for error messages.
    """
    if codes is None or spans is None or code_lengths is None or codes.shape[0] == 0:
        h, e, text_lengths = gather_spans(hidden, input_ids, torch.tensor([[0, 0, 1]]), embed)
        one = torch.ones(1, dtype=torch.long, device=hidden.device)
        stand_in = torch.zeros(1, 1, decoder.codebooks, dtype=torch.long, device=hidden.device)
        loss_sum, _ = decoder(h, e, text_lengths, stand_in, one, list(codebook_weights) if codebook_weights else None)
        return 0.0 * loss_sum.float(), 0
    if not (codes.shape[0] == spans.shape[0] == code_lengths.shape[0]):
        raise DataError(f"speech_codes has {codes.shape[0]} answers, speech_spans {spans.shape[0]} and "
                        f"speech_code_lengths {code_lengths.shape[0]}; the batch's first sample: "
                        f"{(sample_ids or ['?'])[0]} (the collate must emit one of each per spoken answer)")
    if codes.shape[-1] != decoder.codebooks:
        raise DataError(f"speech_codes have {codes.shape[-1]} codebooks but the speech decoder predicts "
                        f"{decoder.codebooks}: the data were encoded with another codec than model.speech.codec "
                        "(rebuild the index cache / shards with this model's codec)")
    h, e, text_lengths = gather_spans(hidden, input_ids, spans, embed)
    loss_sum, frames = decoder(h, e, text_lengths, codes.long(), code_lengths.to(hidden.device),
                               list(codebook_weights) if codebook_weights else None)
    return loss_sum.float(), frames
