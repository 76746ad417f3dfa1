"""A corpus of bad samples, one per kind of problem, mixed with good ones.

``write_bad_corpus(root)`` writes ``root/bad/bad.jsonl``, ``root/bad/list.json`` (a JSON list saved
as Latin-1, not UTF-8) and their media (small files made from the real demo media at run time).
:data:`EXPECTED` maps each bad record's label to the problem kind ``vita.check`` must report and
:data:`IDS` gives its sample id (``None`` for lines that are not JSON objects); ``bad/expected.json``
records where each label was written (file and line). Training with ``data.on_bad_sample=skip``
must complete on exactly the :data:`GOOD` samples.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

GOOD = ["good-image", "good-audio", "good-text-0", "good-text-1", "good-text-2", "good-text-3", "dup-id",
        "truncated-ok", "good-json"]
"""Sample ids a ``skip`` run trains on (``truncated-ok`` is over-long but keeps its first answer)."""

# label -> kind; the label is the sample id unless the id is shared or unreadable ("@..." labels)
EXPECTED = {
    "missing-file": "missing file",
    "truncated-jpeg": "unreadable image",
    "corrupt-png": "unreadable image",
    "tiny-image": "image too small",
    "too-many-images": "too many images",
    "zero-byte-wav": "unreadable audio",
    "zero-frame-wav": "empty audio",
    "too-short-wav": "empty media",
    "audio-too-long": "audio too long",
    "non-finite-wav": "non-finite audio",
    "unreadable-video": "unreadable video",
    "no-decodable-frame": "no decodable frame",
    "marker-mismatch": "marker/media mismatch",
    "empty-conversation": "empty conversation",
    "conversations-string": "conversations not a list",
    "bad-turn": "bad turn",
    "unknown-role": "unknown role",
    "assistant-first": "assistant first",
    "two-user-turns": "two user turns in a row",
    "two-assistant-turns": "two assistant turns in a row",
    "no-answer": "no answer",
    "empty-answer": "no supervised text",
    "answer-cut-off": "no supervised token left",
    "escapes-root": "path escapes root",
    "absolute-path": "absolute path",
    "over-long": "over-long sample",
    "bad-inserted-id": "bad inserted_id",
    "bad-field": "bad field",
    "placeholder-in-text": "tokenization mismatch",
    "@dup-id": "duplicate id",
    "@malformed": "malformed JSON line",
    "@non-utf8": "non-UTF-8 bytes",
    "@not-object": "not an object",
    "latin1-caption": "non-UTF-8 bytes",
    "no-media-root": "no media root",
}
IDS = {label: (None if label.startswith("@") else label) for label in EXPECTED}
IDS["@dup-id"] = "dup-id"
DECODE_TIME = {"truncated-jpeg", "no-decodable-frame", "non-finite-wav"}
"""Bad records whose headers read fine: found when decoded (vita.check, or the loader during training)."""
VERSION = hashlib.sha1(json.dumps([GOOD, EXPECTED, 3]).encode()).hexdigest()[:12]


def _conv(q: str, a: str = "An answer.") -> list[dict]:
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


def is_current(root: Path) -> bool:
    """Whether ``root/bad`` holds this version of the corpus."""
    stamp = root / "bad" / "VERSION"
    return stamp.is_file() and stamp.read_text().strip() == VERSION


def _write_media(root: Path, media: Path) -> None:
    import numpy as np
    import soundfile as sf
    from PIL import Image

    images, speech = (root / "images").resolve(), (root / "speech").resolve()
    shutil.copyfile(images / "astronaut.png", media / "good.png")
    shutil.copyfile(speech / "cards" / "001.wav", media / "good.wav")
    jpeg = (images / "rocket.jpg").read_bytes()
    (media / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (media / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    with Image.open(images / "astronaut.png") as im:
        im.convert("RGB").resize((8, 8)).save(media / "tiny.png")
    (media / "zero.wav").write_bytes(b"")
    sf.write(media / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    wave, rate = sf.read(str(media / "good.wav"), dtype="float32")
    sf.write(media / "short.wav", wave[: rate // 100], rate)  # 10 ms: no 25 ms feature frame
    sf.write(media / "long.wav", np.tile(wave, int(31 * rate / len(wave)) + 1), rate)  # > 30 s of real speech
    nan = wave.copy()
    nan[len(nan) // 2] = np.nan
    sf.write(media / "nan.wav", nan, rate, subtype="FLOAT")
    (media / "broken.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI garbage" * 20)
    avi = (root / "video" / "tree.avi").resolve().read_bytes()
    movi = avi.find(b"movi")  # a real AVI header (444 frames) followed by zeros: no frame decodes
    (media / "nodecode.avi").write_bytes(avi[: movi + 4] + bytes(4096))
    (root / "outside.png").write_bytes((media / "good.png").read_bytes())


def write_bad_corpus(root: Path) -> Path:
    """Write the corpus under ``root/bad``; needs the demo's images, speech and video links in ``root``."""
    bad = root / "bad"
    media = bad / "media"
    media.mkdir(parents=True, exist_ok=True)
    _write_media(root, media)
    img_q = "<image>\nWhat?"
    recs: list[tuple[str | None, object]] = [  # (label of a bad record or None for a good one, record)
        (None, {"id": "good-image", "image": "good.png", "conversations": _conv("<image>\nWhat is this?", "An astronaut.")}),
        (None, {"id": "good-audio", "audio": "good.wav", "conversations": _conv("<audio>\nTranscribe.", "Ten of clubs.")}),
        *((None, {"id": f"good-text-{k}", "conversations": _conv(f"Question {k}?", f"Answer {k}.")}) for k in range(4)),
        (None, {"id": "dup-id", "conversations": _conv("First of two with this id?", "Yes.")}),
        (None, {"id": "truncated-ok", "conversations": _conv("Hi?", "Hello.") + _conv("word " * 600, "Bye.")}),
        ("missing-file", {"image": "nope.jpg", "conversations": _conv(img_q)}),
        ("truncated-jpeg", {"image": "truncated.jpg", "conversations": _conv(img_q)}),
        ("corrupt-png", {"image": "corrupt.png", "conversations": _conv(img_q)}),
        ("tiny-image", {"image": "tiny.png", "conversations": _conv(img_q)}),
        ("too-many-images", {"image": ["good.png"] * 3, "conversations": _conv("<image><image><image>\nSame?")}),
        ("zero-byte-wav", {"audio": "zero.wav", "conversations": _conv("<audio>\nWhat?")}),
        ("zero-frame-wav", {"audio": "empty.wav", "conversations": _conv("<audio>\nWhat?")}),
        ("too-short-wav", {"audio": "short.wav", "conversations": _conv("<audio>\nWhat?")}),
        ("audio-too-long", {"audio": "long.wav", "conversations": _conv("<audio>\nTranscribe.")}),
        ("non-finite-wav", {"audio": "nan.wav", "conversations": _conv("<audio>\nTranscribe.")}),
        ("unreadable-video", {"video": "broken.avi", "conversations": _conv("<video>\nWhat?")}),
        ("no-decodable-frame", {"video": "nodecode.avi", "conversations": _conv("<video>\nWhat?")}),
        ("marker-mismatch", {"image": ["good.png", "good.png"], "conversations": _conv(img_q)}),
        ("empty-conversation", {"conversations": []}),
        ("conversations-string", {"conversations": "human: Hi\ngpt: Hello"}),
        ("bad-turn", {"conversations": ["Hi", "Hello"]}),
        ("unknown-role", {"conversations": [{"from": "human", "value": "Hi"}, {"from": "robot", "value": "Hello"}]}),
        ("assistant-first", {"conversations": [{"from": "gpt", "value": "Hi"}, {"from": "human", "value": "Hi"}]}),
        ("two-user-turns", {"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}),
        ("two-assistant-turns", {"conversations": _conv("a", "b") + [{"from": "gpt", "value": "c"}]}),
        ("no-answer", {"conversations": [{"from": "human", "value": "Anyone?"}]}),
        ("empty-answer", {"conversations": _conv("Hi?", "  \n ")}),
        ("answer-cut-off", {"conversations": _conv("word " * 600, "The answer.")}),
        ("escapes-root", {"image": "../../outside.png", "conversations": _conv(img_q)}),
        ("absolute-path", {"image": str((media / "good.png").resolve()), "conversations": _conv(img_q)}),
        ("over-long", {"image": "good.png", "conversations": _conv("word " * 2000 + img_q)}),
        ("bad-inserted-id", {"inserted_id": 0, "conversations": _conv("Hi")}),
        ("bad-field", {"image": 5, "conversations": _conv(img_q)}),
        ("placeholder-in-text", {"image": "good.png", "conversations": _conv("<image>\nWhat is <|image_pad|>?")}),
        ("@dup-id", {"id": "dup-id", "conversations": _conv("Second of two with this id?", "Yes.")}),
    ]
    lines, where = [], {}
    for label, rec in recs:
        if label is not None and not label.startswith("@"):
            rec = {"id": label, **rec}
        if label is not None:
            where[label] = ["bad.jsonl", len(lines) + 1]
        lines.append(json.dumps(rec).encode())
    for label, raw in (("@malformed", b'{"id": "malformed", "conversations": ['),
                       ("@non-utf8", b'{"id": "non-utf8", "conversations": [{"from": "human", "value": "caf\xe9"}]}'),
                       ("@not-object", b'["not", "an", "object"]')):
        where[label] = ["bad.jsonl", len(lines) + 1]
        lines.append(raw)
    (bad / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    # a JSON list written as Latin-1 (not UTF-8): only the record holding a non-ASCII byte is bad
    listed = [{"id": "good-json", "conversations": _conv("Plain ASCII?", "Yes.")},
              {"id": "latin1-caption", "conversations": _conv("Where?", "Un café à Paris.")},
              {"id": "no-media-root", "audio": "good.wav", "conversations": _conv("<audio>\nWhat?")}]
    text = "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in listed) + "\n]\n"
    (bad / "list.json").write_bytes(text.encode("latin-1"))
    where["latin1-caption"], where["no-media-root"] = ["list.json", 3], ["list.json", 4]
    assert set(where) == set(EXPECTED), set(where) ^ set(EXPECTED)
    (bad / "expected.json").write_text(json.dumps({k: {"file": f, "line": n, "id": IDS[k], "kind": EXPECTED[k]}
                                                   for k, (f, n) in where.items()}, indent=1))
    (bad / "VERSION").write_text(VERSION + "\n")
    return bad
