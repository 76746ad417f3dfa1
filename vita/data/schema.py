"""The sample format (VITA / LLaVA JSON lists and JSONL) and its validation.

A sample is a dict::

    {"id": "...", "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"},
                                    {"from": "gpt", "value": "A cat."}],
     "image": "cats/1.jpg", "audio": ["q1.wav"], "video": "clips/2.avi",
     "set": "coco", "inserted_id": 3, "end_tag": true}

An assistant turn may carry its spoken answer, ``{"from": "gpt", "value": "A cat.", "speech": "answers/1.wav"}``
(relative to the dataset's ``audio_root``, confined to it like the other media): a speaking model learns to
say it (docs/SPEECH.md).

Roles ``human``/``user`` and ``gpt``/``assistant`` alternate, starting with the user. Each
``<image>``, ``<video>``, ``<audio>`` marker in the text takes the next file of that modality, so
marker counts must equal file counts. Paths are relative to the dataset's media root for the
modality and must stay inside it.
"""

from __future__ import annotations

import json
import os
import re
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from vita.errors import DataError

MODALITIES = ("image", "video", "audio")
MARKERS = {"image": "<image>", "video": "<video>", "audio": "<audio>"}
MARKER_RE = re.compile(r"<image>|<video>|<audio>")
USER_ROLES = {"human", "user"}
ASSISTANT_ROLES = {"gpt", "assistant"}


class BadSample(DataError):
    """One sample that cannot be used; ``kind`` names the problem for counts and reports."""

    def __init__(self, kind: str, where: str, sample_id: str | None, detail: str) -> None:
        self.kind, self.where, self.sample_id, self.detail = kind, where, sample_id, detail
        sid = f" sample '{sample_id}'" if sample_id is not None else ""
        super().__init__(f"{where}{sid}: {kind}: {detail}")


@dataclass
class Sample:
    """A validated sample: roles normalised to user/assistant, media resolved to absolute paths."""

    id: str
    turns: list[tuple[str, str]]
    """(role, text) with role ``user`` or ``assistant``."""
    media: dict[str, list[Path]] = field(default_factory=dict)
    inserted_id: int | None = None
    end_tag: bool = True
    where: str = ""
    speech: dict[int, Path] = field(default_factory=dict)
    """Spoken answers: turn index -> speech file (or, from a shard, the member's name)."""

    @property
    def modality(self) -> str:
        """``video`` if it has a video, else ``image`` if it has an image, else ``lang``."""
        if self.media.get("video"):
            return "video"
        return "image" if self.media.get("image") else "lang"


def _as_list(value, kind_key: str, where: str, sid: str) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) and v for v in items):
        raise BadSample("bad field", where, sid, f"'{kind_key}' must be a path or a list of paths, got {value!r}")
    return items


def resolve_media(rel: str, root: Path | None, modality: str, where: str, sid: str) -> Path:
    """``root / rel`` checked to exist and to stay inside ``root`` (no absolute paths, no escaping ``..``)."""
    if root is None:
        raise BadSample("no media root", where, sid,
                        f"the sample has {modality} files but the dataset sets no {modality}_root; add it to its entry in conf/data")
    rel_n = rel.replace("\\", "/")
    if os.path.isabs(rel_n) or re.match(r"^[A-Za-z]:/", rel_n):
        raise BadSample("absolute path", where, sid,
                        f"{modality} path '{rel}' is absolute; write it relative to {modality}_root={root}")
    root_r = Path(root).resolve()
    path = (root_r / rel_n).resolve()
    if path != root_r and root_r not in path.parents:
        raise BadSample("path escapes root", where, sid,
                        f"{modality} path '{rel}' leads outside {modality}_root={root}; keep media inside the root")
    if not path.is_file():
        raise BadSample("missing file", where, sid, f"{modality} file {path} does not exist; fix the path or drop the sample")
    return path


def parse_sample(raw, where: str, roots: dict[str, Path | None], check_files: bool = True,
                 prompt_only: bool = False, max_images: int = 0) -> Sample:
    """Validate one raw record; raises :class:`BadSample` naming the location and the fix.

    Args:
        prompt_only: inference: the conversation must end with the user's turn (the one to answer).
        max_images: most images one sample may have (``data.max_images``; 0 = no limit).
    """
    if not isinstance(raw, dict):
        raise BadSample("not an object", where, None, f"a sample must be a JSON object, got {type(raw).__name__}")
    sid = str(raw.get("id", where))
    conv = raw.get("conversations")
    if conv is not None and not isinstance(conv, list):
        raise BadSample("conversations not a list", where, sid, f"'conversations' is a {type(conv).__name__}; it must "
                        "be a list of {'from': ..., 'value': ...} turns")
    if not conv:
        raise BadSample("empty conversation", where, sid, "'conversations' must be a non-empty list of turns")
    turns: list[tuple[str, str]] = []
    for i, t in enumerate(conv):
        if not isinstance(t, dict) or not isinstance(t.get("value"), str):
            raise BadSample("bad turn", where, sid, f"turn {i} must be {{'from': ..., 'value': <text>}}")
        who = str(t.get("from", "")).lower()
        if who not in USER_ROLES | ASSISTANT_ROLES:
            raise BadSample("unknown role", where, sid, f"turn {i} is from '{t.get('from')}'; use human|user or "
                            "gpt|assistant")
        role = "user" if who in USER_ROLES else "assistant"
        if i == 0 and role == "assistant":
            raise BadSample("assistant first", where, sid, "turn 0 is the assistant's; turns must alternate user "
                            "(human|user) then assistant (gpt|assistant), starting with the user")
        if turns and turns[-1][0] == role:
            raise BadSample(f"two {role} turns in a row", where, sid, f"turns {i - 1} and {i} are both the {role}'s; "
                            f"merge them into one turn, or put the {'assistant' if role == 'user' else 'user'}'s "
                            "turn between them")
        turns.append((role, t["value"]))
    if len(turns) % 2 and not prompt_only:
        raise BadSample("no answer", where, sid, "the last turn is the user's; end with an assistant turn")
    if prompt_only and not len(turns) % 2:
        raise BadSample("no question", where, sid, "a prompt must end with the user's turn (the one to answer)")
    speech = parse_speech(conv, where, sid, roots.get("audio"), check_files) if not prompt_only else {}
    if not prompt_only and all(not text.strip() for role, text in turns if role == "assistant"):
        raise BadSample("no supervised text", where, sid, "every assistant turn is empty, so there is nothing to "
                        "learn; write the answers or drop the sample")
    media: dict[str, list[Path]] = {}
    for m in MODALITIES:
        rels = _as_list(raw.get(m), m, where, sid)
        n_markers = sum(text.count(MARKERS[m]) for _, text in turns)
        if n_markers != len(rels):
            raise BadSample("marker/media mismatch", where, sid,
                            f"{n_markers} {MARKERS[m]} marker(s) in the text but {len(rels)} {m} file(s); "
                            f"put one {MARKERS[m]} per file")
        if m == "image" and max_images and len(rels) > max_images:
            raise BadSample("too many images", where, sid, f"{len(rels)} images > data.max_images={max_images}; "
                            "split the sample or raise data.max_images")
        if rels:
            media[m] = [resolve_media(r, roots.get(m), m, where, sid) if check_files else Path(r) for r in rels]
    inserted = raw.get("inserted_id")
    if inserted is not None and (not isinstance(inserted, int) or not 0 <= inserted < len(turns) or inserted % 2 == 0):
        raise BadSample("bad inserted_id", where, sid, f"inserted_id={inserted!r} must index an assistant turn (odd index)")
    return Sample(sid, turns, media, inserted, bool(raw.get("end_tag", True)), where, speech)


def parse_speech(conv: list[dict], where: str, sid: str, root: Path | None, check_files: bool) -> dict[int, Path]:
    """The ``"speech"`` fields of the turns: turn index -> file under ``root`` (the ``audio_root``)."""
    out: dict[int, Path] = {}
    for i, t in enumerate(conv):
        rel = t.get("speech")
        if rel is None:
            continue
        if not isinstance(rel, str) or not rel:
            raise BadSample("bad field", where, sid, f"turn {i}: 'speech' must be a path to a WAV file, got {rel!r}")
        if str(t.get("from", "")).lower() not in ASSISTANT_ROLES:
            raise BadSample("speech on a user turn", where, sid, f"turn {i}: 'speech' is the assistant's spoken "
                            "answer; a spoken question is an <audio> marker with an 'audio' file")
        if not t["value"].strip():
            raise BadSample("speech answer without text", where, sid, f"turn {i}: the answer text is empty but it has "
                            f"speech '{rel}'; write the words it says (the decoder reads them) or drop the speech")
        if not check_files:
            out[i] = Path(rel)
            continue
        try:
            out[i] = resolve_media(rel, root, "audio", where, sid)
        except BadSample as e:
            kind = "missing speech answer" if e.kind == "missing file" else e.kind
            raise BadSample(kind, where, sid, f"turn {i} speech: {e.detail}") from None
    return out


class AnnotationFile:
    """Random access to the records of one ``.json`` (a list) or ``.jsonl`` file.

    JSONL is indexed by byte offsets, so only one line is read per sample; a JSON list is
    parsed once (text only; prefer JSONL for large sets).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"annotation file {self.path} does not exist; fix the path in conf/data")
        self.jsonl = self.path.suffix == ".jsonl"
        self._records: list | None = None
        if self.jsonl:
            self.offsets, self.lines = array("q"), array("q")  # 16 bytes a line, not ~70 as Python ints
            with open(self.path, "rb") as f:
                pos, lineno = 0, 0
                for line in f:
                    lineno += 1
                    if line.strip():
                        self.offsets.append(pos)
                        self.lines.append(lineno)
                    pos += len(line)
        else:
            self._records, self.lines, self._not_utf8 = _read_json_list(self.path)

    def __len__(self) -> int:
        return len(self.offsets) if self.jsonl else len(self._records)

    def where(self, i: int) -> str:
        return f"{self.path}:{self.lines[i]}"

    def read(self, i: int):
        """The raw record ``i``; a line (or list item) that is not UTF-8 JSON raises :class:`BadSample`."""
        if not self.jsonl:
            if i in self._not_utf8:
                rec = self._records[i]
                sid = str(rec["id"]) if isinstance(rec, dict) and "id" in rec else None
                raise BadSample("non-UTF-8 bytes", self.where(i), sid, f"{self._not_utf8[i]}; re-encode the file as "
                                "UTF-8 (e.g. iconv -f latin1 -t utf-8)")
            return self._records[i]
        with open(self.path, "rb") as f:
            f.seek(self.offsets[i])
            line = f.readline()
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadSample("non-UTF-8 bytes", self.where(i), None, f"{e}; re-encode the file as UTF-8") from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise BadSample("malformed JSON line", self.where(i), None, f"{e.msg} at column {e.colno}; fix the line") from None


_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by errors="surrogateescape"


def _read_json_list(path: Path) -> tuple[list, list[int], dict[int, str]]:
    """The records of a ``.json`` list, the line each starts on, and those holding non-UTF-8 bytes.

    The file is parsed item by item, so a syntax error names its line and a stray Latin-1 byte
    makes only its own sample bad."""
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: UTF-16 text; re-encode the file as UTF-8 (e.g. iconv -f utf-16 -t utf-8)")
    text = raw.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    dec = json.JSONDecoder()
    ws = re.compile(r"\s*")
    records: list = []
    lines: list[int] = []
    bad: dict[int, str] = {}
    line, seen = 1, 0

    def at(pos: int) -> int:
        nonlocal line, seen
        line += text.count("\n", seen, pos)
        seen = pos
        return line

    def fail(pos: int, what: str):
        raise DataError(f"{path}:{at(pos)}: not a valid JSON list ({what}); fix the file or convert it to JSONL")

    pos = ws.match(text).end()
    if not text.startswith("[", pos):
        fail(pos, "a .json annotation file must hold a list of samples")
    pos = ws.match(text, pos + 1).end()
    while not text.startswith("]", pos):
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            fail(e.pos, e.msg)
        records.append(obj)
        lines.append(at(pos))
        m = _NOT_UTF8.search(text, pos, end)
        if m:
            bad[len(records) - 1] = f"byte 0x{ord(m.group(0)) - 0xDC00:02x} at line {at(m.start())} is not UTF-8"
        pos = ws.match(text, end).end()
        if text.startswith(",", pos):
            pos = ws.match(text, pos + 1).end()
        elif not text.startswith("]", pos):
            fail(pos, "expected ',' or ']'")
    return records, lines, bad
