"""Answers for prompts: prompt items -> batches -> :func:`~vita.infer.generate.generate` -> text."""

from __future__ import annotations

from collections.abc import Callable

from vita.infer.generate import GenerationConfig, generate
from vita.infer.load import Loaded
from vita.infer.prompt import Conversation, collate_prompts, conversation_prompt


def decode(loaded: Loaded, ids: list[int]) -> str:
    """New tokens -> answer text (special tokens dropped, surrounding whitespace stripped)."""
    return loaded.tokenizer.decode(ids, skip_special_tokens=True).strip()


def answer_items(loaded: Loaded, items: list[dict], gen: GenerationConfig, batch_size: int = 4,
                 progress: bool = False, on_batch: Callable[[int, dict, list[list[int]]], None] | None = None
                 ) -> list[list[int]]:
    """Generate for prompt items (:func:`vita.infer.prompt.build_prompt`) in left-padded batches;
    returns each item's new token ids, in order. ``on_batch(first_index, batch, rows)`` sees each batch and its
    answers as they are done (spoken answers: :func:`vita.infer.speak.speak_rows`)."""
    out: list[list[int]] = []
    starts = range(0, len(items), max(1, batch_size))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="generating", unit="sample", dynamic_ncols=True)
    for s in starts:
        chunk = items[s:s + batch_size]
        batch = collate_prompts(chunk, loaded.pad_id)
        rows = generate(loaded.model, batch, gen, loaded.stop, loaded.pad_id)
        if on_batch is not None:
            on_batch(s, batch, rows)
        out.extend(rows)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return out


class TextStream:
    """An answer's text as it grows, token by token: what :func:`decode` gives for the tokens so far, shown
    only as far as it is final (an incomplete UTF-8 character or trailing whitespace waits for the next
    token), so the pieces concatenate to the final :func:`decode` text."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.ids, self.shown = tokenizer, [], ""

    def add(self, tok: int) -> str:
        """Take the next token; returns the new text to show ("" if none yet)."""
        self.ids.append(tok)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).strip()
        return "" if text.endswith("\ufffd") else self.advance(text)

    def advance(self, text: str) -> str:
        """Show ``text`` (the answer so far, or the final one) if it continues what was shown; returns the new part."""
        if not text.startswith(self.shown) or len(text) <= len(self.shown):
            return ""
        delta, self.shown = text[len(self.shown):], text
        return delta


def chat_reply(loaded: Loaded, conv: Conversation, gen: GenerationConfig,
               on_text: Callable[[str], None] | None = None) -> tuple[str, int]:
    """The assistant's reply to ``conv`` (which ends with a user turn); ``on_text`` receives the text
    as it streams. Returns (reply, number of tokens generated). The reply is not added to ``conv``."""
    reply, ids, _ = chat_turn(loaded, conv, gen, on_text)
    return reply, len(ids)


def chat_turn(loaded: Loaded, conv: Conversation, gen: GenerationConfig,
              on_text: Callable[[str], None] | None = None) -> tuple[str, list[int], dict]:
    """:func:`chat_reply` that also returns the answer's token ids and the prompt batch (to speak the answer
    with :func:`vita.infer.speak.speak_rows`)."""
    item = conversation_prompt(loaded.processor, conv)
    batch = collate_prompts([item], loaded.pad_id)
    stream = TextStream(loaded.tokenizer)

    def emit(delta: str) -> None:
        if on_text is not None and delta:
            on_text(delta)

    ids = generate(loaded.model, batch, gen, loaded.stop, loaded.pad_id, on_token=lambda _row, tok: emit(stream.add(tok)))[0]
    reply = decode(loaded, ids)
    emit(stream.advance(reply))
    return reply, ids, batch
