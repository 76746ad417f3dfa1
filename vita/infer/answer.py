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
                 progress: bool = False) -> list[list[int]]:
    """Generate for prompt items (:func:`vita.infer.prompt.build_prompt`) in left-padded batches;
    returns each item's new token ids, in order."""
    out: list[list[int]] = []
    starts = range(0, len(items), max(1, batch_size))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="generating", unit="sample", dynamic_ncols=True)
    for s in starts:
        chunk = items[s:s + batch_size]
        batch = collate_prompts(chunk, loaded.pad_id)
        out.extend(generate(loaded.model, batch, gen, loaded.stop, loaded.pad_id))
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return out


def chat_reply(loaded: Loaded, conv: Conversation, gen: GenerationConfig,
               on_text: Callable[[str], None] | None = None) -> tuple[str, int]:
    """The assistant's reply to ``conv`` (which ends with a user turn); ``on_text`` receives the text
    as it streams. Returns (reply, number of tokens generated). The reply is not added to ``conv``."""
    item = conversation_prompt(loaded.processor, conv)
    batch = collate_prompts([item], loaded.pad_id)
    got: list[int] = []
    shown = [""]

    def emit(text: str) -> None:
        if on_text is not None and text.startswith(shown[0]) and len(text) > len(shown[0]):
            on_text(text[len(shown[0]):])
            shown[0] = text

    def on_token(_row: int, tok: int) -> None:
        got.append(tok)
        text = loaded.tokenizer.decode(got, skip_special_tokens=True).lstrip()
        if not text.endswith("\ufffd"):  # else an incomplete UTF-8 character: wait for its next byte
            emit(text)

    ids = generate(loaded.model, batch, gen, loaded.stop, loaded.pad_id, on_token=on_token)[0]
    reply = decode(loaded, ids)
    emit(reply)
    return reply, len(ids)
