"""An OpenAI chat request -> a vita :class:`~vita.infer.prompt.Conversation` and generation settings.

Only the request's shape is checked here (roles, part types, parameters, base64, sizes, paths); the
conversation itself (turn order, markers, media decoding, prompt length) is checked by the training
code when :func:`vita.infer.prompt.conversation_prompt` builds the prompt, as for ``vita.chat``.

Content part types (docs/SERVE.md):

* ``{"type": "text", "text": ...}``
* ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..." | "PATH" | "file:///PATH"}}``
* ``{"type": "video_url", "video_url": {"url": "data:video/mp4;base64,..." | "PATH"}}`` (vita's part type)
* ``{"type": "input_audio", "input_audio": {"data": BASE64, "format": "wav" | "flac" | "ogg" | "mp3"}}``

A PATH is read only under ``--media-root`` (relative to it, or absolute inside it); remote URLs are
never fetched. Media of a user turn are put before its text, as in vita's data format.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from vita.data.schema import MARKERS, BadSample, resolve_media
from vita.infer.prompt import Conversation
from vita.serve.errors import ApiError

PART_TYPES = {"text": None, "image_url": "image", "video_url": "video", "input_audio": "audio"}
"""Content part type -> the modality it carries."""
AUDIO_FORMATS = ("wav", "flac", "ogg", "mp3")
ROLES = ("system", "developer", "user", "assistant")
ENCODERS = {"image": "vision tower (model.vision.tower)", "video": "vision tower (model.vision.tower)",
            "audio": "audio encoder (model.audio.encoder)"}
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w=.+-]+)*?;base64,(?P<data>.*)$", re.S)
_SUFFIX = {"jpeg": ".jpg", "svg+xml": ".svg", "x-msvideo": ".avi", "quicktime": ".mov", "x-matroska": ".mkv",
           "mpeg": ".mp3", "x-wav": ".wav", "wave": ".wav"}


@dataclass
class Limits:
    """What one request may ask for (``python -m vita.serve`` flags)."""

    max_media_bytes: int = 16 << 20
    """Largest decoded media item."""
    max_tokens: int = 1024
    """Largest ``max_tokens``."""
    max_stop: int = 4
    """Most ``stop`` strings (as OpenAI)."""


@dataclass
class ChatRequest:
    """A checked chat request: the conversation to answer and how."""

    conv: Conversation
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    return_token_ids: bool = False
    want_audio: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    """Saved media file -> the request part it came from (errors name the part, not a temporary file)."""

    def explain(self, text: str) -> str:
        """``text`` (an error of the data code) with temporary media paths replaced by their request parts."""
        for path, label in self.labels.items():
            text = text.replace(path, label)
        return text


class Parser:
    """Turns request bodies into :class:`ChatRequest` for one loaded model.

    Args:
        supports: ``Loaded.supports`` (modality -> whether the model has an encoder for it).
        media_dir: where decoded media of this request are written (a per-request temporary folder).
        media_root: the only folder media paths may point into (None: paths are refused).
        limits: size and parameter limits.
    """

    def __init__(self, supports, media_dir: Path, media_root: Path | None, limits: Limits) -> None:
        self.supports, self.media_dir, self.limits = supports, media_dir, limits
        self.media_root = media_root.resolve() if media_root is not None else None
        self.labels: dict[str, str] = {}

    def parse(self, body: dict, max_tokens_default: int) -> ChatRequest:
        if not isinstance(body, dict):
            raise ApiError("invalid_json", f"the body must be a JSON object, got {type(body).__name__}")
        conv = self.conversation(body.get("messages"))
        req = ChatRequest(conv, self._max_tokens(body, max_tokens_default), labels=self.labels)
        req.temperature = _number(body, "temperature", 0.0, 0.0, 2.0)
        req.top_p = _number(body, "top_p", 1.0, 0.0, 1.0, low_open=True)
        req.seed = _integer(body, "seed", None)
        req.stop = self._stop(body.get("stop"))
        req.stream = _flag(body, "stream")
        opts = body.get("stream_options")
        if opts is not None and not isinstance(opts, dict):
            raise ApiError("invalid_parameter", "stream_options must be an object such as {\"include_usage\": true}",
                           "stream_options")
        req.include_usage = bool((opts or {}).get("include_usage", False))
        req.return_token_ids = _flag(body, "return_token_ids")
        n = body.get("n", 1)
        if n != 1:
            raise ApiError("invalid_parameter", f"n={n!r}: vita.serve gives one answer per request; send n=1 (or "
                           "several requests)", "n")
        for key in ("tools", "functions", "tool_choice", "response_format"):
            if body.get(key) not in (None, [], "none", {"type": "text"}):
                raise ApiError("invalid_parameter", f"{key} is not supported by vita.serve (plain chat only); drop it",
                               key)
        mods = body.get("modalities")
        if mods is not None:
            if not isinstance(mods, list) or not mods or any(m not in ("text", "audio") for m in mods):
                raise ApiError("invalid_parameter", f"modalities={mods!r}: use [\"text\"] or [\"text\", \"audio\"]",
                               "modalities")
            req.want_audio = "audio" in mods
        audio = body.get("audio")
        if audio is not None:  # the spoken answer's format (modalities [..., "audio"] asks for it; default wav)
            fmt = audio.get("format", "wav") if isinstance(audio, dict) else None
            if fmt != "wav":
                raise ApiError("invalid_parameter", f"audio={audio!r}: vita.serve speaks WAV; send "
                               "audio: {\"format\": \"wav\"} with modalities [\"text\", \"audio\"]", "audio.format")
        return req

    # -- messages ------------------------------------------------------------------------------------
    def conversation(self, messages) -> Conversation:
        if not isinstance(messages, list) or not messages:
            raise ApiError("invalid_messages", "messages must be a non-empty list of {\"role\", \"content\"} objects",
                           "messages")
        conv = Conversation()
        for i, msg in enumerate(messages):
            where = f"messages[{i}]"
            if not isinstance(msg, dict):
                raise ApiError("invalid_messages", f"{where} must be an object with role and content, got "
                               f"{type(msg).__name__}", where)
            role = msg.get("role")
            if role not in ROLES:
                raise ApiError("invalid_messages", f"{where}.role={role!r}: use one of {', '.join(ROLES)} (tool "
                               "messages are not supported)", f"{where}.role")
            if role in ("system", "developer"):
                if i != 0:
                    raise ApiError("invalid_conversation", f"{where} is a {role} message; only the first message may "
                                   "be the system prompt", f"{where}.role")
                conv.system = self._text_only(msg.get("content"), where)
            elif role == "assistant":
                conv.add_assistant(self._text_only(msg.get("content"), where))
            else:
                text, media = self._user_content(msg.get("content"), where)
                conv.add_user(text, **media)
        return conv

    def _text_only(self, content, where: str) -> str:
        if isinstance(content, str):
            return self._text(content, where)
        if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            return "\n".join(self._text(p.get("text"), f"{where}.content") for p in content)
        raise ApiError("invalid_messages", f"{where}.content must be a string or a list of text parts",
                       f"{where}.content")

    def _text(self, text, where: str) -> str:
        if not isinstance(text, str):
            raise ApiError("invalid_messages", f"{where}: text must be a string, got {type(text).__name__}", where)
        for mod, marker in MARKERS.items():
            if marker in text:
                kind = "input_audio" if mod == "audio" else f"{mod}_url"
                raise ApiError("invalid_text", f"{where}: the text holds {marker}, vita's media marker; send the "
                               f"{mod} as a content part of type {kind} instead", where)
        return text

    def _user_content(self, content, where: str) -> tuple[str, dict[str, list[Path]]]:
        if isinstance(content, str):
            return self._text(content, where), {}
        if not isinstance(content, list) or not content:
            raise ApiError("invalid_messages", f"{where}.content must be a string or a non-empty list of parts",
                           f"{where}.content")
        texts: list[str] = []
        media: dict[str, list[Path]] = {}
        for j, part in enumerate(content):
            pw = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in PART_TYPES:
                raise ApiError("unsupported_part", f"{pw}: part type {kind!r} is not supported; use one of "
                               f"{', '.join(PART_TYPES)}", f"{pw}.type")
            if kind == "text":
                texts.append(self._text(part.get("text"), pw))
                continue
            mod = PART_TYPES[kind]
            if not self.supports(mod):
                raise ApiError("unsupported_modality", f"{pw}: this model has no {ENCODERS[mod]}, so it cannot take "
                               f"{mod} input; serve a model that has one (e.g. model=smol_omni)", f"{pw}.type")
            path = self._audio(part.get("input_audio"), pw) if mod == "audio" else self._url(part.get(kind), kind, mod, pw)
            media.setdefault(mod, []).append(path)
        return "\n".join(texts), media

    # -- media ---------------------------------------------------------------------------------------
    def _url(self, obj, kind: str, mod: str, where: str) -> Path:
        url = obj.get("url") if isinstance(obj, dict) else obj if isinstance(obj, str) else None
        if not isinstance(url, str) or not url:
            raise ApiError("invalid_messages", f"{where}: {kind} must be {{\"url\": \"data:...;base64,...\" or a path}}",
                           f"{where}.{kind}")
        if url.startswith("data:"):
            m = _DATA_URL.match(url)
            if m is None:
                raise ApiError("invalid_base64", f"{where}: a data: URL must read data:<mime type>;base64,<data>",
                               f"{where}.{kind}")
            mime = m.group("mime") or ""
            if mime and not mime.startswith(f"{mod}/"):
                raise ApiError("invalid_media", f"{where}: a {mime} data URL in a {kind} part; send {mod}/* data",
                               f"{where}.{kind}")
            sub = mime.split("/", 1)[1] if "/" in mime else "bin"
            return self._save(m.group("data"), _SUFFIX.get(sub, "." + re.sub(r"[^a-z0-9]", "", sub)[:8]), where,
                              f"{where}.{kind}")
        if re.match(r"^[a-zA-Z][\w+.-]*://", url) and not url.startswith("file://"):
            raise ApiError("remote_url", f"{where}: remote URLs are not fetched ({url.split('://')[0]}://...); send "
                           "the file as a data: URL", f"{where}.{kind}")
        return self._path(url.removeprefix("file://"), mod, where)

    def _path(self, given: str, mod: str, where: str) -> Path:
        if self.media_root is None:
            raise ApiError("path_not_allowed", f"{where}: file paths are off (the server has no --media-root); send "
                           "the file as a data: URL", where)
        rel = os.path.relpath(given, self.media_root) if os.path.isabs(given) else given
        try:
            return resolve_media(rel, self.media_root, mod, where, None)
        except BadSample as e:
            code = "invalid_media" if e.kind == "missing file" else "path_not_allowed"
            raise ApiError(code, f"{where}: {given}: {'no such file under --media-root' if code == 'invalid_media' else 'outside --media-root'}; "
                           "give a path inside the server's --media-root", where) from None

    def _audio(self, obj, where: str) -> Path:
        if not isinstance(obj, dict) or not isinstance(obj.get("data"), str):
            raise ApiError("invalid_messages", f"{where}: input_audio must be {{\"data\": <base64>, \"format\": "
                           f"{'|'.join(AUDIO_FORMATS)}}}", f"{where}.input_audio")
        fmt = obj.get("format")
        if fmt not in AUDIO_FORMATS:
            raise ApiError("invalid_media", f"{where}: audio format {fmt!r} is not read here; send one of "
                           f"{', '.join(AUDIO_FORMATS)}", f"{where}.input_audio.format")
        return self._save(obj["data"], "." + fmt, where, f"{where}.input_audio.data")

    def _save(self, data: str, suffix: str, where: str, param: str) -> Path:
        limit = self.limits.max_media_bytes
        if len(data) > (limit + 2) // 3 * 4 + 4:
            raise ApiError("media_too_large", f"{where}: the media is over the server's limit of {limit / 2**20:g} MiB "
                           "(--max-media-mb); send a smaller file", param)
        try:
            raw = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ApiError("invalid_base64", f"{where}: the data is not valid base64", param) from None
        if not raw:
            raise ApiError("invalid_media", f"{where}: the media is empty", param)
        if len(raw) > limit:
            raise ApiError("media_too_large", f"{where}: {len(raw) / 2**20:.1f} MiB is over the server's limit of "
                           f"{limit / 2**20:g} MiB (--max-media-mb); send a smaller file", param)
        path = self.media_dir / f"part{len(self.labels)}{suffix}"
        path.write_bytes(raw)
        self.labels[str(path.resolve())] = where
        return path.resolve()

    # -- parameters ----------------------------------------------------------------------------------
    def _max_tokens(self, body: dict, default: int) -> int:
        key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        n = _integer(body, key, default)
        if n < 1 or n > self.limits.max_tokens:
            raise ApiError("invalid_parameter", f"{key}={n}: give 1 to {self.limits.max_tokens} (the server's "
                           "--max-tokens)", key)
        return n

    def _stop(self, stop) -> list[str]:
        if stop is None:
            return []
        items = [stop] if isinstance(stop, str) else stop
        if (not isinstance(items, list) or not all(isinstance(s, str) and s for s in items)
                or len(items) > self.limits.max_stop):
            raise ApiError("invalid_parameter", f"stop must be a non-empty string or a list of at most "
                           f"{self.limits.max_stop} of them", "stop")
        return list(items)


def _number(body: dict, key: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float) or v > high or v < low or (low_open and v == low):
        rng = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ApiError("invalid_parameter", f"{key}={v!r}: give a number in {rng}", key)
    return float(v)


def _integer(body: dict, key: str, default):
    v = body.get(key)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise ApiError("invalid_parameter", f"{key}={v!r}: give an integer", key)
    return v


def _flag(body: dict, key: str) -> bool:
    v = body.get(key, False)
    if not isinstance(v, bool) and v is not None:
        raise ApiError("invalid_parameter", f"{key}={v!r}: give true or false", key)
    return bool(v)
