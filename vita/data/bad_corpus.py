"""A corpus of bad samples, one per kind of problem, mixed with good ones.

``write_bad_corpus(root)`` writes ``root/bad/bad.jsonl`` and its media (small files made from
the real demo media at run time). :data:`EXPECTED` maps each bad sample's id (or line, for lines
that are not JSON) to the problem kind ``vita.check`` must report; training with
``data.on_bad_sample=skip`` must complete on the good samples.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

GOOD = ["good-image", "good-audio", "good-text-0", "good-text-1", "good-text-2", "good-text-3"]

# id -> kind ("@line N" for records without a readable id)
EXPECTED = {
    "missing-file": "missing file",
    "truncated-jpeg": "unreadable image",
    "corrupt-png": "unreadable image",
    "zero-byte-wav": "unreadable audio",
    "zero-frame-wav": "empty audio",
    "unreadable-video": "unreadable video",
    "marker-mismatch": "marker/media mismatch",
    "empty-conversation": "empty conversation",
    "assistant-first": "assistant first",
    "turn-order": "turn order",
    "no-answer": "no answer",
    "escapes-root": "path escapes root",
    "absolute-path": "absolute path",
    "over-long": "over-long sample",
    "bad-inserted-id": "bad inserted_id",
    "bad-field": "bad field",
    "placeholder-in-text": "tokenization mismatch",
    "@malformed": "malformed JSON line",
    "@non-utf8": "non-UTF-8 bytes",
    "@not-object": "not an object",
}


def _conv(q: str, a: str = "An answer.") -> list[dict]:
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


def write_bad_corpus(root: Path) -> Path:
    """Write the corpus under ``root/bad``; needs the demo's images and speech links in ``root``."""
    import numpy as np
    import soundfile as sf

    bad = root / "bad"
    media = bad / "media"
    media.mkdir(parents=True, exist_ok=True)
    images, speech = (root / "images").resolve(), (root / "speech").resolve()
    shutil.copyfile(images / "astronaut.png", media / "good.png")
    shutil.copyfile(speech / "cards" / "001.wav", media / "good.wav")
    jpeg = (images / "rocket.jpg").read_bytes()
    (media / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (media / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    (media / "zero.wav").write_bytes(b"")
    sf.write(media / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    (media / "broken.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI garbage" * 20)
    (bad.parent / "outside.png").write_bytes((media / "good.png").read_bytes())
    recs: list[object] = [
        {"id": "good-image", "image": "good.png", "conversations": _conv("<image>\nWhat is this?", "An astronaut.")},
        {"id": "good-audio", "audio": "good.wav", "conversations": _conv("<audio>\nTranscribe.", "Ten of clubs.")},
        *({"id": f"good-text-{k}", "conversations": _conv(f"Question {k}?", f"Answer {k}.")} for k in range(4)),
        {"id": "missing-file", "image": "nope.jpg", "conversations": _conv("<image>\nWhat?")},
        {"id": "truncated-jpeg", "image": "truncated.jpg", "conversations": _conv("<image>\nWhat?")},
        {"id": "corrupt-png", "image": "corrupt.png", "conversations": _conv("<image>\nWhat?")},
        {"id": "zero-byte-wav", "audio": "zero.wav", "conversations": _conv("<audio>\nWhat?")},
        {"id": "zero-frame-wav", "audio": "empty.wav", "conversations": _conv("<audio>\nWhat?")},
        {"id": "unreadable-video", "video": "broken.avi", "conversations": _conv("<video>\nWhat?")},
        {"id": "marker-mismatch", "image": ["good.png", "good.png"], "conversations": _conv("<image>\nWhat?")},
        {"id": "empty-conversation", "conversations": []},
        {"id": "assistant-first", "conversations": [{"from": "gpt", "value": "Hi"}, {"from": "human", "value": "Hi"}]},
        {"id": "turn-order", "conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]},
        {"id": "no-answer", "conversations": [{"from": "human", "value": "Anyone?"}]},
        {"id": "escapes-root", "image": "../../outside.png", "conversations": _conv("<image>\nWhat?")},
        {"id": "absolute-path", "image": str((media / "good.png").resolve()), "conversations": _conv("<image>\nWhat?")},
        {"id": "over-long", "image": "good.png", "conversations": _conv("word " * 2000 + "<image>\nWhat?")},
        {"id": "bad-inserted-id", "inserted_id": 0, "conversations": _conv("Hi")},
        {"id": "bad-field", "image": 5, "conversations": _conv("<image>\nWhat?")},
        {"id": "placeholder-in-text", "image": "good.png", "conversations": _conv("<image>\nWhat is <|image_pad|>?")},
    ]
    lines = [json.dumps(r).encode() for r in recs]
    lines.append(b'{"id": "malformed", "conversations": [')
    lines.append(b'{"id": "non-utf8", "conversations": [{"from": "human", "value": "caf\xe9"}]}')
    lines.append(b'["not", "an", "object"]')
    (bad / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return bad
