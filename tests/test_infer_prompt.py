"""Inference prompts are the training tokenization, token for token (issue 12, acceptance 1).

For every chat template and for text, image, multi-image, video and audio turns (and multi-turn
histories), the prompt that ``vita.chat`` builds (:class:`vita.infer.Conversation`) and the one
``vita.eval`` builds (a record without its answer) equal the training sequence of the same
conversation up to the first token of the last answer; their media tensors are the training ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.data_fixtures import demo_root, tokenizer
from vita.data.dataset import Processor
from vita.data.media import MediaOptions
from vita.data.spec import PRESETS
from vita.infer import Conversation, build_prompt, collate_prompts, conversation_prompt, split_answer
from vita.model.omni import IGNORE_INDEX
from vita.model.tokens import ensure_media_tokens
from vita.registry import TEMPLATES, load_builtins

load_builtins()


@pytest.fixture(scope="module")
def tok():
    t = tokenizer()
    ensure_media_tokens(t)
    return t


@pytest.fixture(scope="module")
def media() -> dict[str, Path]:
    root = demo_root()
    return {"img1": root / "images" / "astronaut.png", "img2": root / "images" / "coffee.png",
            "video": root / "video" / "tree.avi",
            "audio": root / "speech" / "librivox" / "sense_and_sensibility_01_austen_64kb-0880.wav"}


def _proc(tok, name: str, state_tokens: bool = False, layout: bool = False) -> Processor:
    spec = PRESETS["tiny"].with_token_ids(tok)
    return Processor(TEMPLATES.build(name), tok, spec, MediaOptions(max_tiles=4, max_frames=4), 4096,
                     state_tokens, layout)


def _conversation(case: str, media: dict[str, Path]) -> tuple[Conversation, str]:
    """A chat of ``case`` ending with the user's question, and the answer training would supervise."""
    c = Conversation()
    if case == "text":
        c.add_user("What is AI?")
    elif case == "image":
        c.add_user("Describe the image.", image=[media["img1"]])
    elif case == "multi-image":
        c.add_user("Which one is a drink?", image=[media["img1"], media["img2"]])
    elif case == "video":
        c.add_user("What does the video show?", video=[media["video"]])
    elif case == "audio":
        c.add_user("Transcribe the speech.", audio=[media["audio"]])
    elif case == "multi-turn":
        c.add_user("Describe the image.", image=[media["img1"]])
        c.add_assistant("An astronaut.")
        c.add_user("And now this clip?", audio=[media["audio"]])
    return c, "A short answer."


def _training_prefix(proc: Processor, c: Conversation, answer: str) -> tuple[dict, list[int]]:
    raw, roots = c.record("s")
    raw["conversations"].append({"from": "gpt", "value": answer})
    item = proc.load(raw, "s", roots)
    labels = item["labels"]
    first = max(i for i in range(1, len(labels)) if labels[i] != IGNORE_INDEX and labels[i - 1] == IGNORE_INDEX)
    return item, item["input_ids"][:first]


CASES = ["text", "image", "multi-image", "video", "audio", "multi-turn"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", TEMPLATES.names())
def test_prompt_equals_training_prefix(tok, media, name, case):
    """Chat and eval prompts == training input_ids up to the last answer; media tensors equal."""
    proc = _proc(tok, name)
    conv, answer = _conversation(case, media)
    train, prefix = _training_prefix(proc, conv, answer)
    chat = conversation_prompt(proc, conv)
    assert chat["input_ids"] == prefix
    raw, roots = conv.record("s")
    raw["conversations"].append({"from": "gpt", "value": answer})
    ev = build_prompt(proc, split_answer(raw)[0], "s", roots)
    assert ev["input_ids"] == prefix
    for key in ("pixel_values",):
        assert (key in chat) == (key in train)
        if key in train:
            assert torch.equal(chat[key], train[key]) and torch.equal(ev[key], train[key])
    if "audio_features" in train:
        assert all(torch.equal(a, b) for a, b in zip(chat["audio_features"], train["audio_features"], strict=True))


@pytest.mark.parametrize("case", ["image", "audio", "multi-turn"])
def test_vita_layout_and_state_tokens(tok, media, case):
    """VITA's options (marker layout, ☞/☜ answer prefixes): the prompt stops right before the state prefix."""
    proc = _proc(tok, "qwen2.5", state_tokens=True, layout=True)
    conv, answer = _conversation(case, media)
    train, prefix = _training_prefix(proc, conv, answer)
    assert conversation_prompt(proc, conv)["input_ids"] == prefix
    assert tok.decode(train["input_ids"][len(prefix):]).startswith("☞" if case != "image" else "☜")


def test_system_prompt_and_left_padding(tok, media):
    """/system replaces the template's prompt for every modality; batches are left-padded, media in order."""
    proc = _proc(tok, "qwen2.5")
    conv, _ = _conversation("image", media)
    conv.system = "Be brief."
    ids = conversation_prompt(proc, conv)["input_ids"]
    assert tok.decode(ids).startswith("<|im_start|>system\nBe brief.<|im_end|>")
    short, _ = _conversation("text", media)
    items = [conversation_prompt(proc, short), conversation_prompt(proc, conv)]
    batch = collate_prompts(items, tok.pad_token_id)
    n0 = len(items[0]["input_ids"])
    assert batch["input_ids"][0, -n0:].tolist() == items[0]["input_ids"]
    assert batch["attention_mask"][0].tolist() == [0] * (batch["input_ids"].shape[1] - n0) + [1] * n0
    assert torch.equal(batch["pixel_values"], items[1]["pixel_values"]) and "labels" not in batch


def test_prompt_errors_name_the_file(tok, media, tmp_path):
    """A missing or undecodable file, or a modality without encoder, is one BadSample naming the file."""
    from vita.data.schema import BadSample

    proc = _proc(tok, "chatml")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    for path, kind in ((tmp_path / "missing.png", "missing file"), (bad, "unreadable image")):
        c = Conversation()
        c.add_user("What?", image=[path])
        with pytest.raises(BadSample, match=kind) as e:
            conversation_prompt(proc, c)
        assert path.name in str(e.value)
    text_only = Processor(TEMPLATES.build("chatml"), tok, PRESETS["tiny"].with_token_ids(tok).__class__(
        image_size=None, audio_feature=None), MediaOptions(), 512)
    c = Conversation()
    c.add_user("What?", audio=[media["audio"]])
    with pytest.raises(BadSample, match="no audio encoder"):
        conversation_prompt(text_only, c)
