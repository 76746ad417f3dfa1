"""Templates and tokenisation: supervised tokens decode to exactly the assistant text, markers
expand to exact placeholder counts, VITA's system prompts and state prefixes."""

from __future__ import annotations

import pytest

from tests.data_fixtures import tokenizer
from vita.data.schema import BadSample
from vita.data.spec import PRESETS
from vita.data.templates import VITA_PROMPTS
from vita.data.tokenize import tokenize_segments
from vita.model.omni import IGNORE_INDEX
from vita.registry import TEMPLATES, load_builtins

load_builtins()
TURNS = [("user", "What is 2+2?"), ("assistant", "It is 4."), ("user", "And 3+3?"), ("assistant", "Six, of course.")]
ENDS = {"chatml": "<|im_end|>", "qwen2.5": "<|im_end|>", "smollm2": "<|im_end|>", "llama3": "<|eot_id|>",
        "mistral": "</s>", "nemo": "</s>", "mixtral": "</s>"}


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


def sup(tok, item) -> str:
    return tok.decode([i for i, lab in zip(item["input_ids"], item["labels"], strict=True) if lab != IGNORE_INDEX])


@pytest.mark.parametrize("name", sorted(ENDS))
def test_supervised_tokens_are_exactly_the_answers(tok, name):
    """For every template, the labelled tokens decode to each answer + the end-of-turn token."""
    t = TEMPLATES.build(name)
    item = tokenize_segments(t.render(TURNS), tok, 10_000, "s")
    end = ENDS[name]
    assert sup(tok, item) == f"It is 4.{end}Six, of course.{end}"
    assert "What is 2+2?" in tok.decode(item["input_ids"]) and "What is 2+2?" not in sup(tok, item)


def test_templates_registered():
    """Every template the issue names is a registry key."""
    assert set(ENDS) <= set(TEMPLATES.names())


def test_qwen_system_prompt_by_modality(tok):
    """qwen2.5 uses VITA's image / video / lang prompts, exactly."""
    t = TEMPLATES.build("qwen2.5")
    for mod in ("image", "video", "lang"):
        text = "".join(s for s, _ in t.render(TURNS[:2], modality=mod))
        assert text.startswith(f"<|im_start|>system\n{VITA_PROMPTS[mod]}<|im_end|>\n<|im_start|>user\n")
    assert VITA_PROMPTS["image"].endswith("Please note that you are seeing the image, not the video.")
    assert VITA_PROMPTS["video"].endswith("Please note that you are seeing the video, not the image.")
    assert VITA_PROMPTS["lang"].startswith("You are an AI robot and your name is VITA. \n- You are a multimodal")


def test_state_tokens_and_end_tag(tok):
    """☞ after a spoken query, ☜ after a text query, ☟ on inserted_id; end_tag=False drops the last end."""
    t = TEMPLATES.build("qwen2.5")
    turns = [("user", "<audio>\n"), ("assistant", "A"), ("user", "typed"), ("assistant", "B"),
             ("user", "<audio>\n"), ("assistant", "C")]
    segs = t.render(turns, state_tokens=True, inserted_id=5, end_tag=False)
    supervised = [s for s, k in segs if k]
    assert supervised == ["☞A<|im_end|>", "☜B<|im_end|>", "☟C"]


def test_marker_expansion_exact_counts(tok):
    """Each marker becomes exactly its block of placeholder ids, in order; nothing is supervised there."""
    spec = PRESETS["tiny"].with_token_ids(tok)
    t = TEMPLATES.build("qwen2.5")
    turns = [("user", "<image>\nand <video> then <audio>\n<image>"), ("assistant", "ok")]
    blocks = {"image": [(spec.image_token_id, 12), (spec.image_token_id, 4)],
              "video": [(spec.video_token_id, 64)], "audio": [(spec.audio_token_id, 7)]}
    item = tokenize_segments(t.render(turns), tok, 10_000, "s", blocks)
    ids = item["input_ids"]
    assert ids.count(spec.image_token_id) == 16 and ids.count(spec.video_token_id) == 64
    assert ids.count(spec.audio_token_id) == 7
    first = ids.index(spec.image_token_id)
    assert ids[first:first + 12] == [spec.image_token_id] * 12 and ids[first + 12] != spec.image_token_id
    assert all(lab == IGNORE_INDEX for i, lab in zip(ids, item["labels"], strict=True)
               if i in (spec.image_token_id, spec.video_token_id, spec.audio_token_id))
    assert sup(tok, item) == "ok<|im_end|>"


def test_mismatch_is_an_error_never_a_masked_sample(tok):
    """Too few media items for the markers, or a literal placeholder in the text, raise."""
    spec = PRESETS["tiny"].with_token_ids(tok)
    t = TEMPLATES.build("chatml")
    with pytest.raises(BadSample, match="tokenization mismatch"):
        tokenize_segments(t.render([("user", "<image><image>"), ("assistant", "x")]), tok, 1000, "s",
                          {"image": [(spec.image_token_id, 4)]}, where="f:1")
    with pytest.raises(BadSample, match="placeholder token"):
        tokenize_segments(t.render([("user", "<image> <|image_pad|>"), ("assistant", "x")]), tok, 1000, "s",
                          {"image": [(spec.image_token_id, 4)]}, where="f:1")


def test_truncation_never_cuts_media(tok):
    """Text may be truncated; a cut that would split a media block is an over-long sample."""
    spec = PRESETS["tiny"].with_token_ids(tok)
    t = TEMPLATES.build("chatml")
    segs = t.render([("user", "<image>"), ("assistant", "word " * 50)])
    item = tokenize_segments(segs, tok, 60, "s", {"image": [(spec.image_token_id, 8)]}, where="f:1")
    assert len(item["input_ids"]) == 60 and item["input_ids"].count(spec.image_token_id) == 8
    with pytest.raises(BadSample, match="over-long sample"):
        tokenize_segments(segs, tok, 25, "s", {"image": [(spec.image_token_id, 20)]}, where="f:1")


@pytest.mark.parametrize("text, want", [
    ("What is this?\n<image>", "<image>\nWhat is this?"),
    ("<image>\nWhat?", "<image>\nWhat?"),
    ("<image>\n<audio>\n", "<image>\n<audio>"),
    ("Compare <video> please", "Compare <video>\n please"),  # only newlines next to markers go
    ("<audio>\n\n\nHi", "<audio>\nHi"),
    ("plain\n\ntext", "plain\ntext"),
])
def test_vita_layout(text, want):
    """VITA's marker layout: trailing visual markers move first, a newline after each, <audio>\\n joined."""
    from vita.data.templates import vita_layout

    assert vita_layout(text) == want
