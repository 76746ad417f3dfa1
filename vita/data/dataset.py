"""Samples -> tokens: validate, measure from metadata, decode media, tokenise.

:func:`index` makes one pass over a source without decoding media: it validates every record,
reads media headers (image size, video frame count, audio duration) and tokenises with the
exact placeholder counts, giving each sample's token length for the samplers. The
:class:`MediaDataset` then decodes a sample's media when it is used; nothing decoded is kept.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from vita.data.media import (
    MediaError,
    MediaOptions,
    audio_num_frames,
    image_num_tiles,
    load_audio_features,
    load_image_tiles,
    load_video_frames,
    video_num_frames,
)
from vita.data.schema import MARKER_RE, BadSample, Sample, parse_sample
from vita.data.sources import Source
from vita.data.spec import DataSpec
from vita.data.tokenize import tokenize_segments
from vita.errors import DataError

log = logging.getLogger(__name__)


def media_options(data_cfg) -> MediaOptions:
    """The :class:`MediaOptions` of ``cfg.data``."""
    return MediaOptions(min_tiles=data_cfg.min_tiles, max_tiles=data_cfg.max_tiles,
                        use_thumbnail=data_cfg.use_thumbnail, image_aspect_ratio=data_cfg.image_aspect_ratio,
                        min_frames=data_cfg.min_frames, max_frames=data_cfg.max_frames,
                        video_fps=data_cfg.video_fps, dither=data_cfg.dither)


class Processor:
    """Turns one raw record into a tokenised sample (with or without decoding its media)."""

    def __init__(self, template, tokenizer, spec: DataSpec | None, opts: MediaOptions, max_length: int,
                 state_tokens: bool = False, layout: bool = False, prompt_max_length: int = 0) -> None:
        self.template, self.tokenizer, self.spec, self.opts = template, tokenizer, spec, opts
        self.max_length, self.state_tokens, self.layout = max_length, state_tokens, layout
        self.prompt_max_length = prompt_max_length
        """Longest prompt in ``prompt_only`` mode (the model's context); 0 = ``max_length``."""

    def parse(self, raw, where: str, roots: dict, prompt_only: bool = False) -> Sample:
        s = parse_sample(raw, where, roots, prompt_only=prompt_only)
        if s.media and self.spec is None:
            raise BadSample("media without encoder", where, s.id, "the sample has media but the model has no "
                            "encoders; use a multimodal model or set data.media_spec")
        for mod in s.media:
            if not self.supports(mod):
                enc = "audio encoder (model.audio.encoder)" if mod == "audio" else "vision tower (model.vision.tower)"
                raise BadSample("media without encoder", where, s.id, f"{s.media[mod][0]}: the model has no {enc} "
                                f"for {mod} input; use a model that has one or drop the {mod}")
        return s

    def with_system(self, system: str) -> Processor:
        """A copy whose template uses ``system`` as the system prompt for every modality (``""`` = none)."""
        from dataclasses import replace

        return Processor(replace(self.template, prompts={"lang": system}), self.tokenizer, self.spec, self.opts,
                         self.max_length, self.state_tokens, self.layout, self.prompt_max_length)

    def supports(self, modality: str) -> bool:
        """Whether this processor (its model's encoders) can take ``image``, ``video`` or ``audio`` input."""
        if self.spec is None:
            return False
        if modality == "audio":
            return self.spec.audio_feature is not None
        return self.spec.image_size is not None

    def _media_error(self, s: Sample, e: MediaError) -> BadSample:
        return BadSample(e.kind, s.where, s.id, f"{e.path}: {e.detail}")

    def counts(self, s: Sample) -> dict[str, list[int]]:
        """Placeholder tokens of each media item, from headers only."""
        sp, o = self.spec, self.opts
        try:
            return {
                "image": [image_num_tiles(p, o, sp.image_size) * sp.tokens_per_tile for p in s.media.get("image", [])],
                "video": [video_num_frames(p, o) * sp.tokens_per_tile for p in s.media.get("video", [])],
                "audio": [sp.audio_num_tokens(audio_num_frames(p, sp)) for p in s.media.get("audio", [])],
            }
        except MediaError as e:
            raise self._media_error(s, e) from None

    def tokens(self, s: Sample, counts: dict[str, list[int]], prompt_only: bool = False) -> dict:
        segs = self.template.render(s.turns, modality=s.modality, state_tokens=self.state_tokens,
                                    inserted_id=s.inserted_id, end_tag=s.end_tag, layout=self.layout)
        blocks = {}
        if self.spec is not None:
            ids = {"image": self.spec.image_token_id, "video": self.spec.video_token_id, "audio": self.spec.audio_token_id}
            blocks = {m: [(ids[m], n) for n in c] for m, c in counts.items() if c}
        for m, c in counts.items():
            if any(n < 1 for n in c):
                raise BadSample("empty media", s.where, s.id, f"a {m} item gives 0 tokens (too short?); drop it")
        limit = self.prompt_max_length if prompt_only and self.prompt_max_length else self.max_length
        return tokenize_segments(segs, self.tokenizer, limit, s.id, blocks, where=s.where or s.id,
                                 prompt_only=prompt_only)

    def measure(self, raw, where: str, roots: dict) -> tuple[int, bool]:
        """(token length, has image/video) of a record without decoding media; raises ``BadSample``."""
        s = self.parse(raw, where, roots)
        counts = self.counts(s) if s.media else {}
        return len(self.tokens(s, counts)["input_ids"]), bool(s.media.get("image") or s.media.get("video"))

    def load(self, raw, where: str, roots: dict, prompt_only: bool = False) -> dict:
        """The training item: ids, labels and decoded media in placeholder order; raises ``BadSample``.

        ``prompt_only`` (inference): ``raw`` ends with the user's turn and the item is the prompt up to
        the assistant header, nothing cut (see :func:`vita.data.tokenize.tokenize_segments`).
        """
        s = self.parse(raw, where, roots, prompt_only)
        item: dict = {"id": s.id}
        if not s.media:
            item.update(self.tokens(s, {}, prompt_only))
            return item
        sp, o = self.spec, self.opts
        nxt = {m: 0 for m in s.media}
        visual, audio = [], []
        counts: dict[str, list[int]] = {m: [] for m in ("image", "video", "audio")}
        try:
            for _, text in s.turns:
                for m in MARKER_RE.finditer(text):
                    mod = m.group(0)[1:-1]
                    path = s.media[mod][nxt[mod]]
                    nxt[mod] += 1
                    if mod == "image":
                        t = load_image_tiles(path, o, sp)
                    elif mod == "video":
                        t = load_video_frames(path, o, sp)
                    else:
                        a = load_audio_features(path, o, sp)
                        audio.append(a)
                        counts["audio"].append(sp.audio_num_tokens(a.shape[0]))
                        continue
                    visual.append(t)
                    counts[mod].append(t.shape[0] * sp.tokens_per_tile)
        except MediaError as e:
            raise self._media_error(s, e) from None
        item.update(self.tokens(s, counts, prompt_only))
        if visual:
            item["pixel_values"] = torch.cat(visual)
        if audio:
            item["audio_features"] = audio
        return item


@dataclass
class Index:
    """The usable samples of a source, with their lengths, and the problems of the others."""

    refs: np.ndarray
    lengths: np.ndarray
    multimodal: np.ndarray
    problems: list[BadSample] = field(default_factory=list)

    @property
    def skipped(self) -> Counter:
        return Counter(p.kind for p in self.problems)


def _where(source: Source, i: int) -> str:
    try:
        return source.read(i)[1]
    except BadSample as e:
        return e.where


def _policy_error(e: BadSample) -> DataError:
    return DataError(f"{e} (set data.on_bad_sample=skip to drop such samples, or run python -m vita.check)")


def index(source: Source, proc: Processor, on_bad_sample: str = "fail", progress: bool = False,
          use_cache: bool = False) -> Index:
    """Validate and measure every record; ``fail`` raises at the first bad one, ``skip`` keeps going.

    With ``use_cache`` a mixture's index is kept in ``~/.cache/vita/index`` (:mod:`vita.data.index_cache`)."""
    from vita.data import index_cache

    key = index_cache.cache_key(source, proc) if use_cache else None
    hit = index_cache.load(key) if key else None
    if hit is not None:
        refs, lengths, mm, problems = hit
        if problems and on_bad_sample == "fail":
            raise _policy_error(problems[0])
        for p in problems:
            log.warning("skipping %s", p)
        return Index(refs, lengths, mm, problems)
    refs, lengths, mm, problems = [], [], [], []
    it = range(len(source))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="indexing samples", unit="sample", dynamic_ncols=True)
    for i in it:
        try:
            raw, where, roots, _ = source.read(i)
            n, is_mm = proc.measure(raw, where, roots)
        except BadSample as e:
            if on_bad_sample == "fail":
                raise _policy_error(e) from None
            log.warning("skipping %s", e)
            problems.append(e)
            continue
        refs.append(i)
        lengths.append(n)
        mm.append(is_mm)
    idx = Index(np.array(refs, dtype=np.int64), np.array(lengths, dtype=np.int64), np.array(mm, dtype=bool), problems)
    if key:
        index_cache.save(key, idx.refs, idx.lengths, idx.multimodal, problems)
    return idx


class MediaDataset(Dataset):
    """Item ``i`` = the ``i``-th usable record, tokenised with its media decoded.

    A record that fails now (e.g. a truncated JPEG whose header was fine) comes back as
    ``{"id", "bad": (kind, message)}``; the collator drops it and the loader applies the policy.
    """

    def __init__(self, source: Source, idx: Index, proc: Processor) -> None:
        self.source, self.idx, self.proc = source, idx, proc

    def __len__(self) -> int:
        return len(self.idx.refs)

    def __getitem__(self, i: int) -> dict:
        ref = int(self.idx.refs[i])
        try:
            raw, where, roots, _ = self.source.read(ref)
            return self.proc.load(raw, where, roots)
        except BadSample as e:
            return {"id": e.sample_id or e.where, "bad": (e.kind, str(e))}
