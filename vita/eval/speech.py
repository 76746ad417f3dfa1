"""Spoken answers for the speech metrics (``asr_wer``, ``asr_cer``, ``first_chunk_ms``) of an eval set.

Each generated answer is spoken on the inference path (:func:`vita.infer.speak.speak_rows`: the same forward,
spans, decoder and codec as ``vita.chat --speak``) and its audio transcribed by the set's ASR
(:func:`vita.eval.asr.load_asr`, default the shipped Whisper tiny.en). The prediction row gains ``transcript``,
``first_chunk_ms``, ``speech_seconds`` and ``rtf``; :func:`vita.eval.metrics.compute_rows` scores them.

Distributed evaluation (``lockstep``): the LLM forward over prompt + answer runs on every rank for every batch (a
rank without data runs it on its dummy batch), so it stays a collective under ZeRO-3; the decoder then runs on
each rank alone, with its parameters gathered once per batch when ZeRO-3 has partitioned them
(:func:`whole_parameters`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from torch import nn

from vita.errors import ConfigError


@contextlib.contextmanager
def whole_parameters(module: nn.Module) -> Iterator[None]:
    """Inside: ``module``'s parameters are whole on this rank and no ZeRO-3 hook partitions or fetches them, so
    its forwards are local (an autoregressive decoder may take a different number of steps on each rank).
    A no-op for modules that ZeRO-3 does not partition. Entering it is a collective under ZeRO-3."""
    params = [p for p in module.parameters() if hasattr(p, "ds_id")]
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params):
        for p in params:  # an active sub-module id keeps the release hook from partitioning them again
            p.ds_active_sub_modules.add(-1)
        try:
            yield
        finally:
            for p in params:
                p.ds_active_sub_modules.discard(-1)


def speak_answers(model, batch: dict, rows: Sequence[Sequence[int]], pad_id: int, asr_spec: str | None = None,
                  chunk: int = 8, dummy: bool = False) -> list[dict]:
    """Speak and transcribe a generated batch's answers; one dict per row (``transcript``, ``first_chunk_ms``,
    ``speech_seconds``, ``rtf``). ``dummy``: this rank has no rows and only joins the collectives."""
    from vita.eval.asr import load_asr
    from vita.infer.speak import answer_hidden, speak_rows, speech_problem

    why = speech_problem(model)
    if why:
        raise ConfigError(f"speech metrics (asr_wer, asr_cer, first_chunk_ms): {why}")
    if dummy:
        answer_hidden(model, batch, [[]] * batch["input_ids"].shape[0], pad_id)  # the forward every rank runs
        with whole_parameters(model.speech_decoder):
            return []
    asr = load_asr(asr_spec)
    out = []
    spoken = speak_rows(model, batch, rows, pad_id, chunk)
    with whole_parameters(model.speech_decoder):
        for sp in spoken:
            wave = sp.wave()
            out.append({"transcript": asr(wave.numpy(), sp.sample_rate) if wave.numel() else "", **sp.stats.record()})
    return out
