"""A conversation -> ``input_ids`` + ``labels`` (loss on assistant content and its end token only).

Each segment is tokenised on its own, so the supervised span is exact. Inside a segment, every
``<image>`` / ``<video>`` / ``<audio>`` marker becomes a block of its placeholder token, as many
as the media item needs (tiles x tokens per tile, frames x tokens per tile, the audio encoder's
token count). Any disagreement between markers, media and tokens is an error, never a silently
masked sample.
"""

from __future__ import annotations

from vita.data.schema import MARKER_RE, BadSample
from vita.data.templates import Segment
from vita.errors import DataError
from vita.model.omni import IGNORE_INDEX

Block = tuple[int, int]  # (placeholder token id, number of tokens)


def tokenize_segments(segments: list[Segment], tokenizer, max_length: int, sample_id: str,
                      blocks: dict[str, list[Block]] | None = None, where: str = "", prompt_only: bool = False) -> dict:
    """Tokenise ``segments``, expanding the n-th marker of a modality to ``blocks[modality][n]``.

    Truncates text past ``max_length``; a sample whose cut would remove part of a media block,
    or that keeps no supervised token, raises (``BadSample`` when media are involved).
    ``prompt_only`` (inference: segments that end with the assistant header): nothing is cut and
    no supervised token is required; a prompt longer than ``max_length`` raises instead.
    """
    queues = {m: list(v) for m, v in (blocks or {}).items()}
    used = {m: 0 for m in queues}
    input_ids: list[int] = []
    labels: list[int] = []
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
        input_ids.extend(ids)
        labels.extend(ids if supervised else [IGNORE_INDEX] * len(ids))
    for mod, q in queues.items():
        if used[mod] != len(q):
            raise BadSample("tokenization mismatch", where, sample_id, f"{len(q)} {mod} items but {used[mod]} markers")
    want = sum(n for q in queues.values() for _, n in q)
    if placeholder_ids and sum(1 for t in input_ids if t in placeholder_ids) != want:
        raise BadSample("tokenization mismatch", where, sample_id,
                        "the text itself contains a placeholder token (<|image_pad|> etc.); remove it")
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
        why = f"truncated to data.max_length={max_length}" if truncated else "the template produced none"
        msg = f"no supervised token left ({why}); raise data.max_length or fix the sample"
        if where:
            raise BadSample("no supervised token left", where, sample_id, msg)
        raise DataError(f"sample '{sample_id}': {msg}")
    return {"input_ids": input_ids, "labels": labels}
