"""A conversation -> ``input_ids`` + ``labels`` (loss on assistant content and its end token only).

Each segment is tokenised on its own, so the supervised span is exact. Inside a segment, every
``<image>`` / ``<video>`` / ``<audio>`` marker becomes a block of its placeholder token, as many
as the media item needs (tiles x tokens per tile, frames x tokens per tile, the audio encoder's
token count). Any disagreement between markers, media and tokens is an error, never a silently
masked sample.

:func:`encode_segments` gives the whole sample; :func:`truncate` cuts it to ``data.max_length``
(never inside a media block, never to zero supervised tokens); :func:`tokenize_segments` does both.
What a cut removed is counted (:func:`lost_supervised`), so truncation is never silent.
"""

from __future__ import annotations

from vita.data.schema import MARKER_RE, BadSample
from vita.data.templates import Segment
from vita.errors import DataError
from vita.model.omni import IGNORE_INDEX

Block = tuple[int, int]  # (placeholder token id, number of tokens)


def encode_segments(segments: list[Segment], tokenizer, sample_id: str,
                    blocks: dict[str, list[Block]] | None = None, where: str = "") -> dict:
    """Tokenise ``segments`` in full (no truncation), expanding the n-th marker of a modality to
    ``blocks[modality][n]``; a marker/media/token disagreement raises ``BadSample``.

    Returns ``input_ids``, ``labels`` and ``ranges``: each segment's ``(start, end)`` token positions (what a
    spoken answer's span is cut from; :func:`truncate` drops them)."""
    queues = {m: list(v) for m, v in (blocks or {}).items()}
    used = {m: 0 for m in queues}
    input_ids: list[int] = []
    labels: list[int] = []
    ranges: list[tuple[int, int]] = []
    placeholder_ids = {tid for v in queues.values() for tid, _ in v}
    for text, supervised in segments:
        pos = 0
        pieces: list[list[int]] = []
        for m in MARKER_RE.finditer(text):
            pieces.append(tokenizer(text[pos:m.start()], add_special_tokens=False)["input_ids"])
            mod = m.group(0)[1:-1]
            q = queues.get(mod, [])
            if used.get(mod, 0) >= len(q):
                raise BadSample("tokenization mismatch", where, sample_id,
                                f"more {m.group(0)} markers than {mod} items; put one marker per file")
            tid, n = q[used[mod]]
            used[mod] += 1
            pieces.append([tid] * n)
            pos = m.end()
        pieces.append(tokenizer(text[pos:], add_special_tokens=False)["input_ids"])
        ids = [t for p in pieces for t in p]
        ranges.append((len(input_ids), len(input_ids) + len(ids)))
        input_ids.extend(ids)
        labels.extend(ids if supervised else [IGNORE_INDEX] * len(ids))
    for mod, q in queues.items():
        if used[mod] != len(q):
            raise BadSample("tokenization mismatch", where, sample_id, f"{len(q)} {mod} items but {used[mod]} markers")
    want = sum(n for q in queues.values() for _, n in q)
    if placeholder_ids and sum(1 for t in input_ids if t in placeholder_ids) != want:
        raise BadSample("tokenization mismatch", where, sample_id,
                        "the text itself contains a placeholder token (<|image_pad|> etc.); remove it")
    return {"input_ids": input_ids, "labels": labels, "ranges": ranges}


def lost_supervised(labels: list[int], max_length: int) -> int:
    """Supervised tokens that a cut to ``max_length`` removes."""
    return sum(1 for lab in labels[max_length:] if lab != IGNORE_INDEX)


def truncate(item: dict, max_length: int, sample_id: str, where: str = "",
             placeholder_ids: set[int] | frozenset = frozenset(), prompt_only: bool = False) -> dict:
    """Cut ``item`` to ``max_length`` tokens. A cut into a media block, or one (or a sample) that keeps
    no supervised token, raises ``BadSample`` (a plain ``DataError`` without a location).

    ``prompt_only`` (inference: segments that end with the assistant header): nothing is cut and
    no supervised token is required; a prompt longer than ``max_length`` raises instead."""
    input_ids, labels = item["input_ids"], item["labels"]
    truncated = len(input_ids) > max_length
    if prompt_only:
        if truncated:
            raise BadSample("over-long prompt", where, sample_id,
                            f"{len(input_ids)} prompt tokens > {max_length} (the model's context); shorten the "
                            "conversation (/reset), use fewer media, or lower data.max_tiles")
        return {"input_ids": input_ids, "labels": labels}
    if truncated and placeholder_ids and any(t in placeholder_ids for t in input_ids[max_length:]):
        raise BadSample("over-long sample", where, sample_id,
                        f"{len(input_ids)} tokens after media expansion > data.max_length={max_length}, and cutting "
                        "would split a media block; raise data.max_length, lower data.max_tiles, or drop the sample")
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    if all(lab == IGNORE_INDEX for lab in labels[1:]):
        why = (f"truncated from {len(item['input_ids'])} tokens to data.max_length={max_length}" if truncated
               else "the template produced none")
        fix = "raise data.max_length or shorten the sample"
        if where:
            raise BadSample("no supervised token left", where, sample_id, f"{why}; {fix}")
        raise DataError(f"sample '{sample_id}': no supervised token left ({why}); {fix}")
    return {"input_ids": input_ids, "labels": labels}


def tokenize_segments(segments: list[Segment], tokenizer, max_length: int, sample_id: str,
                      blocks: dict[str, list[Block]] | None = None, where: str = "", prompt_only: bool = False) -> dict:
    """:func:`encode_segments` then :func:`truncate` to ``max_length`` (``prompt_only``: see there)."""
    item = encode_segments(segments, tokenizer, sample_id, blocks, where)
    ph = {tid for v in (blocks or {}).values() for tid, _ in v}
    return truncate(item, max_length, sample_id, where, ph, prompt_only)
