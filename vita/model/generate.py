"""Token generation for an :class:`~vita.model.omni.OmniModel`: the one ``generate`` of vita.

The prompt (media already expanded to placeholder blocks by the data pipeline) goes through
``model.embed`` once, so media features are spliced exactly as in training; then the HF LLM
runs on ``inputs_embeds`` for the first step and on token ids with its ``past_key_values``
after that (or re-runs the whole sequence each step with ``use_cache=False``). Rows are
left-padded; each stops at its own stop sequence (the template's end-of-turn token, the
tokenizer's EOS) or after ``max_new_tokens``.

``lockstep=True`` is for distributed evaluation under ZeRO-3, where every forward is a
collective: every rank keeps stepping (finished rows, or a whole dummy batch, feed padding)
until an all-reduced "anyone left?" flag says all ranks are done.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from vita.collectives import all_reduce_sum


@dataclass(frozen=True)
class GenerationConfig:
    """How to pick tokens. ``temperature=0`` is greedy (``top_p`` is then unused)."""

    max_new_tokens: int = 128
    """Most tokens generated per row (the stop sequence included)."""
    temperature: float = 0.0
    """0 = greedy; > 0 = sample from softmax(logits / temperature)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches ``top_p``."""
    repetition_penalty: float = 1.0
    """> 1 discourages tokens already in the row (prompt text and generated), as in HF: logits of
    seen tokens are divided by it when positive, multiplied when negative."""
    use_cache: bool = True
    """Reuse the LLM's key/value cache; False recomputes the whole sequence each step."""
    seed: int | None = None
    """Seed of the sampling generator (None = torch's global RNG)."""


def stop_sequences(tokenizer, end_text: str | None) -> list[list[int]]:
    """Token sequences that end an answer: the template's end-of-turn text and the tokenizer's EOS."""
    seqs: list[list[int]] = []
    if end_text:
        ids = tokenizer(end_text, add_special_tokens=False)["input_ids"]
        if ids:
            seqs.append(list(ids))
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None and [eos] not in seqs:
        seqs.append([int(eos)])
    return seqs


def _ends_with(row: list[int], seqs: Sequence[Sequence[int]]) -> int:
    """Length of the stop sequence ``row`` ends with (0 if none)."""
    for s in seqs:
        if len(row) >= len(s) and row[-len(s):] == list(s):
            return len(s)
    return 0


def _cache_arg(llm) -> str:
    """The LLM forward's name for the key/value cache (``cache`` in transformers 5, ``past_key_values`` before)."""
    import inspect

    return "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"


def _cache_of(out):
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)


def _held(row: list[int], seqs: Sequence[Sequence[int]]) -> int:
    """How many trailing tokens of ``row`` could still begin a stop sequence (not streamed yet)."""
    best = 0
    for s in seqs:
        for k in range(min(len(s) - 1, len(row)), best, -1):
            if row[-k:] == list(s[:k]):
                best = k
                break
    return best


def _pick(logits: torch.Tensor, seen: list[set[int]], gen: GenerationConfig, rng: torch.Generator | None) -> torch.Tensor:
    """[B, V] float logits -> [B] next tokens."""
    if gen.repetition_penalty != 1.0:
        for b, ids in enumerate(seen):
            if ids:
                idx = torch.tensor(sorted(ids), device=logits.device)
                v = logits[b, idx]
                logits[b, idx] = torch.where(v > 0, v / gen.repetition_penalty, v * gen.repetition_penalty)
    if gen.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / gen.temperature, dim=-1)
    if gen.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = (sorted_p.cumsum(dim=-1) - sorted_p) > gen.top_p  # mass before this token already reaches top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=rng).squeeze(-1)


@torch.no_grad()
def generate(model, batch: dict, gen: GenerationConfig, stop: Sequence[Sequence[int]], pad_id: int, *,
             on_token: Callable[[int, int], None] | None = None, lockstep: bool = False,
             dummy: bool = False, stop_row: Callable[[int, list[int]], bool] | None = None) -> list[list[int]]:
    """Generate answers for a left-padded prompt batch; returns each row's new tokens, stop sequence cut.

    Args:
        model: an :class:`~vita.model.omni.OmniModel` (or a DeepSpeed engine's ``module``).
        batch: ``input_ids`` / ``attention_mask`` [B, L] left-padded (:func:`vita.infer.prompt.collate_prompts`),
            optional ``pixel_values``, ``audio_features``, ``audio_lengths`` as in training.
        gen: sampling settings.
        stop: token sequences that end a row (:func:`stop_sequences`); the row's tokens before it are returned.
        pad_id: the token fed to rows that are done.
        on_token: called as ``on_token(row, token_id)`` for every kept token as soon as it is chosen (streaming).
        lockstep: step until *every rank* is done (all-reduce per step); needed under ZeRO-3.
        dummy: this rank has no data and ``batch`` is a stand-in: its rows start done and return nothing.
        stop_row: called as ``stop_row(row, tokens)`` after each kept token of a live row; True ends that row
            there (its tokens so far are returned): a per-row token limit, a caller's stop text, a client
            that left (``vita.serve``).
    """
    param = next(model.parameters())
    dev = param.device
    ids = batch["input_ids"].to(dev)
    mask = batch["attention_mask"].to(dev)
    media = {k: batch[k].to(dev, param.dtype) if batch[k].is_floating_point() else batch[k].to(dev)
             for k in ("pixel_values", "audio_features", "audio_lengths") if k in batch}
    bsz = ids.shape[0]
    llm = model.llm
    embed_tokens = llm.get_input_embeddings()
    embeds, _ = model.embed(ids, media.get("pixel_values"), media.get("audio_features"), media.get("audio_lengths"))
    placeholders = {t for t in (model.image_token_id, model.video_token_id, model.audio_token_id) if t is not None}
    seen = [{int(t) for t, m in zip(ids[b].tolist(), mask[b].tolist()) if m and t not in placeholders}
            for b in range(bsz)]
    rng = None
    if gen.seed is not None and gen.temperature > 0:
        rng = torch.Generator(device=dev).manual_seed(gen.seed)
    kw = {"output_router_logits": False} if getattr(model, "is_moe", False) else {}
    cache_arg = _cache_arg(llm)
    out_rows: list[list[int]] = [[] for _ in range(bsz)]
    streamed = [0] * bsz

    def flush(b: int, hold: int = 0) -> None:
        if on_token is not None:
            for t in out_rows[b][streamed[b]:len(out_rows[b]) - hold]:
                on_token(b, t)
            streamed[b] = max(streamed[b], len(out_rows[b]) - hold)
    done = [dummy] * bsz
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=gen.use_cache,
                 logits_to_keep=1, **kw)
    past = _cache_of(logits) if gen.use_cache else None
    logits = logits.logits[:, -1].float()
    for step in range(gen.max_new_tokens):
        nxt = _pick(logits, seen, gen, rng)
        for b in range(bsz):
            if done[b]:
                nxt[b] = pad_id
                continue
            t = int(nxt[b])
            out_rows[b].append(t)
            seen[b].add(t)
            cut = _ends_with(out_rows[b], stop)
            if cut:
                del out_rows[b][-cut:]
                done[b] = True
            elif stop_row is not None and stop_row(b, out_rows[b]):
                done[b] = True
            flush(b, 0 if done[b] else _held(out_rows[b], stop))
        left = float(not all(done)) if step + 1 < gen.max_new_tokens else 0.0
        if lockstep:
            left = all_reduce_sum(left)
        if not left:
            break
        mask = torch.cat([mask, mask.new_ones(bsz, 1)], dim=1)
        new_pos = pos[:, -1:] + 1
        pos = torch.cat([pos, new_pos], dim=1)
        if gen.use_cache:
            res = llm(input_ids=nxt[:, None], attention_mask=mask, position_ids=new_pos, use_cache=True,
                      logits_to_keep=1, **{cache_arg: past}, **kw)
            past = _cache_of(res)
        else:
            embeds = torch.cat([embeds, embed_tokens(nxt[:, None]).to(embeds.dtype)], dim=1)
            res = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=1,
                      **kw)
        logits = res.logits[:, -1].float()
    for b in range(bsz):
        flush(b)  # a row cut by max_new_tokens: what was held back as a possible stop prefix
    return [[] if dummy else r for r in out_rows]
