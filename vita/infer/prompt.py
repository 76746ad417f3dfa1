"""Prompts for inference, built by the training code itself.

A prompt is a VITA-format record whose conversation ends with the user's turn. It goes through
:meth:`vita.data.dataset.Processor.load` with ``prompt_only=True``: the same template
(system prompt by modality, state tokens, VITA layout), the same marker expansion, image
tiling, video frame sampling and audio features as training, so the prompt's tokens are those
of the training sequence up to the first answer token (``tests/test_infer_prompt.py``).
Prompts are batched with :func:`collate_prompts` (the training collator, then left padding).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vita.data.collate import Collator
from vita.data.schema import MARKERS, USER_ROLES


@dataclass
class Conversation:
    """A chat so far: ``(role, text)`` turns (role ``user`` or ``assistant``) and the media files they
    refer to. Each ``<image>`` / ``<video>`` / ``<audio>`` marker in a user turn takes the next file
    of its modality, as in the data format."""

    turns: list[tuple[str, str]] = field(default_factory=list)
    media: dict[str, list[Path]] = field(default_factory=dict)
    system: str | None = None
    """Overrides the template's system prompt (``None`` = the template's default for the modality)."""

    def add_user(self, text: str, image: list | None = None, video: list | None = None,
                 audio: list | None = None) -> None:
        """Append a user turn; its media files get markers in front of the text (visual first)."""
        markers = []
        for mod, files in (("image", image), ("video", video), ("audio", audio)):
            for f in files or []:
                self.media.setdefault(mod, []).append(Path(f).expanduser().resolve())
                markers.append(MARKERS[mod] + "\n")
        self.turns.append(("user", "".join(markers) + text))

    def add_assistant(self, text: str) -> None:
        self.turns.append(("assistant", text))

    def record(self, sample_id: str = "prompt") -> tuple[dict, dict[str, Path | None]]:
        """The VITA record of this conversation and its media roots (each modality's files relative
        to their common folder, so the data code's path checks apply unchanged)."""
        raw: dict = {"id": sample_id, "conversations": [
            {"from": "human" if r == "user" else "gpt", "value": t} for r, t in self.turns]}
        roots: dict[str, Path | None] = {}
        for mod, files in self.media.items():
            if not files:
                continue
            root = Path(os.path.commonpath([str(f.parent) for f in files]))
            roots[mod] = root
            raw[mod] = [str(f.relative_to(root)) for f in files]
        return raw, roots


def split_answer(raw: dict) -> tuple[dict, str | None]:
    """A training record -> (its prompt record without the last answer, that answer or None)."""
    conv = list(raw.get("conversations") or [])
    answer = None
    if conv and str(conv[-1].get("from", "")).lower() not in USER_ROLES:
        answer = str(conv[-1].get("value", ""))
        conv = conv[:-1]
    out = dict(raw)
    out["conversations"] = conv
    return out, answer


def build_prompt(processor, raw: dict, where: str = "prompt", roots: dict | None = None) -> dict:
    """One prompt item (``input_ids``, ``pixel_values``, ``audio_features`` ...) from a record that ends
    with the user's turn; bad input raises :class:`~vita.data.schema.BadSample` naming the file and fix.

    Args:
        processor: the :class:`~vita.data.dataset.Processor` of the model (``Loaded.processor``).
        raw: a VITA record (``Conversation.record()`` or a line of an annotation file without its answer).
        where: its location, for error messages.
        roots: media roots per modality (as in ``conf/data`` datasets).
    """
    return processor.load(raw, where, roots or {}, prompt_only=True)


def conversation_prompt(processor, conv: Conversation, sample_id: str = "prompt") -> dict:
    """:func:`build_prompt` of a :class:`Conversation`."""
    raw, roots = conv.record(sample_id)
    if conv.system is not None:
        processor = processor.with_system(conv.system)
    return build_prompt(processor, raw, sample_id, roots)


def collate_prompts(items: list[dict], pad_id: int) -> dict:
    """Prompt items -> a batch as training collates it (media stacked in placeholder order), but
    left-padded so that every row's next token comes at the same position."""
    batch = Collator(pad_id)(items)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    left_ids = torch.full_like(ids, pad_id)
    left_mask = torch.zeros_like(mask)
    for r in range(ids.shape[0]):
        n = int(mask[r].sum())
        left_ids[r, ids.shape[1] - n:] = ids[r, :n]
        left_mask[r, ids.shape[1] - n:] = 1
    batch["input_ids"], batch["attention_mask"] = left_ids, left_mask
    batch.pop("labels", None)
    return batch


