"""``python -m vita.chat``: the REPL in a pseudo-terminal, and the batch mode (issue 12, acceptance 3).

The REPL (``model=tiny_omni``: random tiny LLM + vision tower + audio encoder) answers an image
question, rejects a missing file with one line naming it and goes on, answers an audio question
about a real speech clip, then quits. Batch mode answers a VITA-format file with a progress bar.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import ROOT, spawn_repl, vita_env
from tests.data_fixtures import demo_root

pexpect = pytest.importorskip("pexpect")


def test_repl_two_turns_survives_a_missing_file(tmp_path):
    root = demo_root()
    image = root / "images" / "astronaut.png"
    audio = root / "speech" / "librivox" / "sense_and_sensibility_01_austen_64kb-0880.wav"
    missing = tmp_path / "nope.wav"
    child = spawn_repl(["vita.chat", "experiment=chatterbot_tiny", "model=tiny_omni", "--max-new-tokens", "6"], tmp_path)
    try:
        child.expect("you> ")
        child.sendline(f"/image {image}")
        child.expect(r"\(image attached to your next message")
        child.expect("you> ")
        child.sendline("What is in the picture?")
        child.expect("assistant> ")
        child.expect(r"\[\d+ tokens, [0-9.]+ tokens/s\]")
        child.expect("you> ")
        child.sendline(f"/audio {missing}")
        child.expect(r"error: \S*nope\.wav: no such file; check the path")
        child.expect("you> ")
        child.sendline("/video")  # no path: one line, loop goes on
        child.expect("error: unknown command")
        child.expect("you> ")
        child.sendline(f"/audio {audio}")
        child.expect(r"\(audio attached")
        child.expect("you> ")
        child.sendline("What did you hear?")
        child.expect("assistant> ")
        child.expect(r"\[\d+ tokens, [0-9.]+ tokens/s\]")
        child.expect("you> ")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, (tmp_path / "session.log").read_text()[-3000:]


def test_repl_rejects_media_without_encoder(tmp_path):
    """Audio into a text-only model: one line naming the file and the fix; the REPL still answers."""
    audio = demo_root() / "spoken" / "chat_q0.wav"
    child = pexpect.spawn(sys.executable, ["-m", "vita.chat", "experiment=chatterbot_tiny", "model=tiny_qwen2",
                                           "--max-new-tokens", "3"],
                          cwd=str(ROOT), env=vita_env(), encoding="utf-8", timeout=180)
    try:
        child.expect("you> ")
        child.sendline(f"/audio {audio}")
        child.expect(r"error: \S*chat_q0\.wav: this model has no audio encoder .*model=smol_omni")
        child.expect("you> ")
        child.sendline("Hello")
        child.expect(r"\[3 tokens")
        child.expect("you> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_batch_mode_answers_a_vita_file(tmp_path):
    """--input/--output: one prediction row per record, in order, with the reference kept."""
    from vita.chat import main

    root = demo_root()
    src = tmp_path / "q.jsonl"
    lines = (root / "annotations" / "images.jsonl").read_text().splitlines()[:3]
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "preds.jsonl"
    rc = main(["experiment=chatterbot_tiny", "model=tiny_omni", "--input", str(src), "--output", str(out),
               "--media-root", str(root / "images"),
               "--max-new-tokens", "3", "--batch-size", "2"])
    assert rc == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [json.loads(x)["id"] for x in lines]
    assert rows[0]["reference"] == json.loads(lines[0])["conversations"][-1]["value"]
    assert all("prediction" in r for r in rows)
