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
    media_options,  # noqa: F401  (vita.data re-exports it from here)
    video_num_frames,
)
from vita.data.schema import MARKER_RE, BadSample, Sample, parse_sample
from vita.data.sources import Source
from vita.data.spec import DataSpec
from vita.data.tokenize import encode_segments, lost_supervised, truncate
from vita.errors import DataError

log = logging.getLogger(__name__)


OVERLONG = ("truncate", "skip", "fail")


class OverLong(BadSample):
    """A sample longer than ``data.max_length`` under ``data.overlong=skip`` (dropped) or ``fail`` (stops)."""

    def __init__(self, where: str, sample_id: str | None, length: int, max_length: int, policy: str) -> None:
        self.length, self.policy = length, policy
        fix = ("dropped (data.overlong=skip)" if policy == "skip" else
               "set data.overlong=truncate or skip, or raise data.max_length")
        super().__init__("over-long sample", where, sample_id, f"{length} tokens > data.max_length={max_length}; {fix}")


@dataclass
class Measured:
    """One sample measured from headers: its training length and what truncation cost it."""

    length: int
    """Tokens after truncation (what the samplers see)."""
    multimodal: bool
    """Has an image or a video."""
    full_length: int
    """Tokens before truncation (> ``max_length`` = over-long)."""
    lost_supervised: int
    """Supervised tokens the cut removed."""
    sample_id: str = ""
    speech: list[np.ndarray] | None = None
    """Codes ``[F, K]`` of each spoken answer (speaking models), computed once here and kept in the index."""


@dataclass
class Truncated:
    """An over-long sample kept under ``data.overlong=truncate``."""

    where: str
    sample_id: str
    length: int
    lost_supervised: int

    def __str__(self) -> str:
        return f"{self.where} sample '{self.sample_id}' ({self.length} tokens, {self.lost_supervised} supervised lost)"


class Processor:
    """Turns one raw record into a tokenised sample (with or without decoding its media)."""

    def __init__(self, template, tokenizer, spec: DataSpec | None, opts: MediaOptions, max_length: int,
                 state_tokens: bool = False, layout: bool = False, overlong: str = "truncate",
                 max_images: int = 0, prompt_max_length: int = 0) -> None:
        if overlong not in OVERLONG:
            raise DataError(f"data.overlong={overlong!r}; valid options: {', '.join(OVERLONG)}")
        self.template, self.tokenizer, self.spec, self.opts = template, tokenizer, spec, opts
        self.max_length, self.state_tokens, self.layout = max_length, state_tokens, layout
        self.overlong, self.max_images = overlong, max_images
        self.prompt_max_length = prompt_max_length
        """Longest prompt in ``prompt_only`` mode (the model's context); 0 = ``max_length``."""

    def parse(self, raw, where: str, roots: dict, prompt_only: bool = False, check_files: bool = True) -> Sample:
        """``raw`` validated (:func:`vita.data.schema.parse_sample`) and checked against the model's encoders;
        ``check_files=False`` leaves media paths as written (a shard holds the media itself)."""
        s = parse_sample(raw, where, roots, check_files=check_files, prompt_only=prompt_only,
                         max_images=self.max_images)
        if s.media and self.spec is None:
            raise BadSample("media without encoder", where, s.id, "the sample has media but the model has no "
                            "encoders; use a multimodal model or set data.media_spec")
        if s.speech and (self.spec is None or self.spec.speech_codec is None):
            t, path = next(iter(s.speech.items()))
            raise BadSample("speech answer without speech decoder", where, s.id, f"turn {t} has speech {path} but the "
                            "model has no speech decoder; set model.speech (codec + decoder, docs/SPEECH.md) or remove "
                            "the 'speech' fields")
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
                         self.max_length, self.state_tokens, self.layout, self.overlong, self.max_images,
                         self.prompt_max_length)

    def supports(self, modality: str) -> bool:
        """Whether this processor (its model's encoders) can take ``image``, ``video`` or ``audio`` input."""
        if self.spec is None:
            return False
        if modality == "audio":
            return self.spec.audio_feature is not None
        return self.spec.image_size is not None

    def _media_error(self, s: Sample, e: MediaError) -> BadSample:
        fix = "" if "; " in e.detail else "; re-encode or replace the file, or drop the sample"
        return BadSample(e.kind, s.where, s.id, f"{e.path}: {e.detail}{fix}")

    def counts(self, s: Sample) -> dict[str, list[int]]:
        """Placeholder tokens of each media item, from headers only."""
        sp, o = self.spec, self.opts
        try:
            return {
                "image": [image_num_tiles(p, o, sp.image_size, sp.patch_size) * sp.tokens_per_tile
                          for p in s.media.get("image", [])],
                "video": [video_num_frames(p, o) * sp.tokens_per_tile for p in s.media.get("video", [])],
                "audio": [sp.audio_num_tokens(audio_num_frames(p, sp)) for p in s.media.get("audio", [])],
            }
        except MediaError as e:
            raise self._media_error(s, e) from None

    def encode(self, s: Sample, counts: dict[str, list[int]]) -> tuple[dict, set[int]]:
        """The whole tokenised sample (not truncated) and its placeholder ids."""
        segs = self.template.render(s.turns, modality=s.modality, state_tokens=self.state_tokens,
                                    inserted_id=s.inserted_id, end_tag=s.end_tag, layout=self.layout)
        blocks = {}
        if self.spec is not None:
            ids = {"image": self.spec.image_token_id, "video": self.spec.video_token_id, "audio": self.spec.audio_token_id}
            blocks = {m: [(ids[m], n) for n in c] for m, c in counts.items() if c}
        for m, c in counts.items():
            if any(n < 1 for n in c):
                article = "an" if m[0] in "aeiou" else "a"
                raise BadSample("empty media", s.where, s.id, f"{article} {m} item gives 0 tokens (too short?); drop it")
        item = encode_segments(segs, self.tokenizer, s.id, blocks, where=s.where or s.id)
        item["supervised"] = [sup for _, sup in segs]
        return item, {tid for v in blocks.values() for tid, _ in v}

    def speech_codes(self, s: Sample) -> list[torch.Tensor]:
        """The codes of each spoken answer of ``s`` (turn order) by the model's codec; raises ``BadSample``."""
        from vita.data.speech import speech_codes

        try:
            return [speech_codes(p, self.spec) for _, p in sorted(s.speech.items())]
        except MediaError as e:
            raise self._media_error(s, e) from None

    def speech_spans(self, s: Sample, full: dict, kept: int) -> list[tuple[int, int]]:
        """Token spans of the spoken answers' text in the (cut) sample; a cut into one raises ``BadSample``."""
        from vita.data.speech import answer_spans

        end_ids = self.tokenizer(self.template.end, add_special_tokens=False)["input_ids"] if self.template.end else []
        spoken = sorted(s.speech)
        spans = answer_spans(full["ranges"], full["supervised"], s.turns, spoken, end_ids, full["input_ids"])
        for t, (a, b) in zip(spoken, spans):
            if b > kept:
                raise BadSample("spoken answer cut by truncation", s.where or s.id, s.id, f"turn {t}'s answer ends at "
                                f"token {b} > data.max_length={self.max_length} ({len(full['input_ids'])} tokens in all): "
                                "its speech would lose its words; raise data.max_length or shorten the conversation")
            if b <= a:
                raise BadSample("speech answer without text", s.where or s.id, s.id, f"turn {t}'s answer has no "
                                "text token; write the words its speech says")
        return spans

    def tokens(self, s: Sample, counts: dict[str, list[int]], prompt_only: bool = False) -> dict:
        """The training tokens: :meth:`encode` cut to ``max_length`` (see :func:`vita.data.tokenize.truncate`);
        ``prompt_only``: the whole prompt, up to ``prompt_max_length`` (else an error), nothing cut."""
        item, ph = self.encode(s, counts)
        if prompt_only:
            limit = self.prompt_max_length or self.max_length
            return truncate(item, limit, s.id, s.where or s.id, ph, prompt_only=True)
        out = self._cut(s, item, ph)
        if s.speech:
            out["speech_spans"] = self.speech_spans(s, item, len(out["input_ids"]))
        return out

    def _cut(self, s: Sample, item: dict, placeholder_ids: set[int]) -> dict:
        if len(item["input_ids"]) > self.max_length and self.overlong != "truncate":
            raise OverLong(s.where or s.id, s.id, len(item["input_ids"]), self.max_length, self.overlong)
        return truncate(item, self.max_length, s.id, s.where or s.id, placeholder_ids)

    def measure_sample(self, raw, where: str, roots: dict) -> Measured:
        """Lengths of a record from its media headers (nothing decoded); raises ``BadSample``
        (:class:`OverLong` for an over-long sample under ``data.overlong=skip|fail``)."""
        s = self.parse(raw, where, roots)
        counts = self.counts(s) if s.media else {}
        full, ph = self.encode(s, counts)
        n = len(self._cut(s, full, ph)["input_ids"])
        codes = None
        if s.speech:
            self.speech_spans(s, full, n)
            codes = [c.numpy().astype(np.int32) for c in self.speech_codes(s)]
        return Measured(n, bool(s.media.get("image") or s.media.get("video")), len(full["input_ids"]),
                        lost_supervised(full["labels"], self.max_length), s.id, codes)

    def measure(self, raw, where: str, roots: dict) -> tuple[int, bool]:
        """(token length, has image/video) of a record without decoding media; raises ``BadSample``."""
        m = self.measure_sample(raw, where, roots)
        return m.length, m.multimodal

    def load(self, raw, where: str, roots: dict, prompt_only: bool = False, speech_codes: list | None = None) -> dict:
        """The training item: ids, labels and decoded media in placeholder order; raises ``BadSample``.

        ``prompt_only`` (inference): ``raw`` ends with the user's turn and the item is the prompt up to
        the assistant header, nothing cut (see :func:`vita.data.tokenize.tokenize_segments`).
        ``speech_codes``: the spoken answers' codes already computed (the index's), else encoded here.
        """
        return self.load_sample(self.parse(raw, where, roots, prompt_only), prompt_only, speech_codes)

    def load_sample(self, s: Sample, prompt_only: bool = False, speech_codes: list | None = None) -> dict:
        """:meth:`load` of a parsed sample (its media paths or file-like objects); raises ``BadSample``."""
        item: dict = {"id": s.id}
        if s.speech and not prompt_only:
            codes = self.speech_codes(s) if speech_codes is None else [torch.as_tensor(c).long() for c in speech_codes]
            if len(codes) != len(s.speech):
                raise BadSample("missing member", s.where, s.id, f"{len(s.speech)} spoken answers but {len(codes)} "
                                "code arrays; re-shard or delete the index cache")
            item["speech_codes"] = codes
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
    truncated: list[Truncated] = field(default_factory=list)
    """Over-long samples kept under ``data.overlong=truncate`` (each record once)."""
    speech: dict[int, list[np.ndarray]] = field(default_factory=dict)
    """Position in ``refs`` -> the codes of that sample's spoken answers (speaking models only)."""

    @property
    def skipped(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    @property
    def lost_supervised(self) -> int:
        """Supervised tokens that truncation removes (each record counted once)."""
        return sum(t.lost_supervised for t in self.truncated)


def _policy_error(e: BadSample) -> DataError:
    if isinstance(e, OverLong):
        return DataError(f"{e} (data.overlong=fail)")
    return DataError(f"{e} (set data.on_bad_sample=skip to drop such samples, or run python -m vita.check)")


def duplicate_ids(keys: list[tuple[str, str, tuple, str]]) -> dict[int, BadSample]:
    """Positions whose sample id another record of the same dataset already uses.

    Args:
        keys: per position ``(dataset, sample id, record key, location)``; the same record seen twice
            (a ratio above 1) is not a duplicate, and the record that comes first in its files is kept.
    """
    first: dict[tuple[str, str], tuple[tuple, str]] = {}
    for name, sid, rec, where in keys:
        k = (name, sid)
        if k not in first or rec < first[k][0]:
            first[k] = (rec, where)
    out = {}
    for pos, (name, sid, rec, where) in enumerate(keys):
        rec0, where0 = first[(name, sid)]
        if rec != rec0:
            out[pos] = BadSample("duplicate id", where, sid, f"{where0} has the same id in dataset '{name}'; give "
                                 "every sample its own id")
    return out


def index(source: Source, proc: Processor, on_bad_sample: str = "fail", progress: bool = False,
          use_cache: bool = False) -> Index:
    """Validate and measure every record; ``fail`` raises at the first bad one, ``skip`` keeps going.

    Over-long samples follow ``proc.overlong``: ``truncate`` keeps them (listed in :attr:`Index.truncated`),
    ``skip`` drops and counts them whatever ``on_bad_sample`` says, ``fail`` raises at the first.
    With ``use_cache`` a mixture's index is kept in ``~/.cache/vita/index`` (:mod:`vita.data.index_cache`)."""
    from vita.data import index_cache

    key = index_cache.cache_key(source, proc) if use_cache else None
    hit = index_cache.load(key) if key else None
    if hit is not None:
        refs, lengths, mm, problems, truncated, speech = hit
        policy_problems = [p for p in problems if not (p.kind == "over-long sample" and proc.overlong == "skip")]
        if policy_problems and on_bad_sample == "fail":
            raise _policy_error(policy_problems[0])
        for p in policy_problems:
            log.warning("skipping %s", p)
        return Index(refs, lengths, mm, problems, truncated, speech)
    rows: list[tuple[int, Measured, str]] = []
    problems: list[BadSample] = []
    it = range(len(source))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="indexing samples", unit="sample", dynamic_ncols=True)

    def bad(e: BadSample) -> None:
        if isinstance(e, OverLong) and e.policy == "skip":
            problems.append(e)  # counted, and summarised once by the caller
            return
        if on_bad_sample == "fail" or isinstance(e, OverLong):
            raise _policy_error(e) from None
        log.warning("skipping %s", e)
        problems.append(e)

    for i in it:
        try:
            raw, where, roots, _ = source.read(i)
            rows.append((i, proc.measure_sample(raw, where, roots), where))
        except BadSample as e:
            bad(e)
    dups = duplicate_ids([(source.dataset_of(i), m.sample_id, source.record_key(i), w) for i, m, w in rows])
    for e in dups.values():
        bad(e)
    rows = [r for k, r in enumerate(rows) if k not in dups]
    seen: set = set()
    truncated = []
    for i, m, w in rows:
        if m.full_length > proc.max_length and source.record_key(i) not in seen:
            seen.add(source.record_key(i))
            truncated.append(Truncated(w, m.sample_id, m.full_length, m.lost_supervised))
    idx = Index(np.array([i for i, _, _ in rows], dtype=np.int64), np.array([m.length for _, m, _ in rows], dtype=np.int64),
                np.array([m.multimodal for _, m, _ in rows], dtype=bool), problems, truncated,
                {k: m.speech for k, (_, m, _) in enumerate(rows) if m.speech})
    if key:
        index_cache.save(key, idx.refs, idx.lengths, idx.multimodal, problems, truncated, idx.speech)
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
            return self.proc.load(raw, where, roots, speech_codes=self.idx.speech.get(i))
        except BadSample as e:
            return {"id": e.sample_id or e.where, "bad": (e.kind, str(e))}
