"""A conversation -> ``input_ids`` + ``labels`` (loss on assistant content and its end token only)."""

from __future__ import annotations

from vita.data.templates import Segment
from vita.errors import DataError
from vita.model.omni import IGNORE_INDEX


def tokenize_segments(segments: list[Segment], tokenizer, max_length: int, sample_id: str) -> dict:
    """Tokenise each segment on its own and concatenate, so the supervised span is exact.

    Truncates to ``max_length``; raises :class:`DataError` if nothing supervised is left.
    """
    input_ids: list[int] = []
    labels: list[int] = []
    for text, supervised in segments:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids.extend(ids)
        labels.extend(ids if supervised else [IGNORE_INDEX] * len(ids))
    truncated = len(input_ids) > max_length
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    if all(lab == IGNORE_INDEX for lab in labels[1:]):
        why = f"truncated to data.max_length={max_length}" if truncated else "the template produced none"
        raise DataError(f"sample '{sample_id}': no supervised token left ({why}); raise data.max_length or fix the sample")
    return {"input_ids": input_ids, "labels": labels}
