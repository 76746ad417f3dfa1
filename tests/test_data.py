"""Data pipeline: corpus, chat template + tokenisation (exact labels), bad samples, samplers, loader, collator."""

from __future__ import annotations

import itertools
import logging

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from vita.config import ASSETS, DataConfig, EngineConfig, TrainConfig
from vita.data import TokenizedDataset, build_data, tokenize_all
from vita.data.chatterbot import load_conversations
from vita.data.collate import Collator
from vita.data.loader import Position, StepLoader
from vita.data.samplers import RandomSampler, SequentialSampler
from vita.data.templates import ChatML
from vita.data.tokenize import tokenize_segments
from vita.errors import ConfigError, DataError
from vita.model.omni import IGNORE_INDEX
from vita.registry import DATASETS, SAMPLERS, TEMPLATES, load_builtins

load_builtins()

CONV = [
    {"from": "human", "value": "Hello there"},
    {"from": "gpt", "value": "Hi! How are you?"},
    {"from": "human", "value": "Good, thanks."},
    {"from": "gpt", "value": "Great."},
]


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(ASSETS / "tokenizers/chatterbot-bpe")


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    return load_conversations()


def data_cfg(**kw):
    return OmegaConf.structured(DataConfig(**{"name": "test", **kw}))


@pytest.fixture
def inline_data(monkeypatch):
    """Register a dataset format ``inline`` that returns the given samples (removed after the test)."""

    def use(samples: list[dict]) -> None:
        monkeypatch.setitem(DATASETS._entries, "inline", lambda data_cfg: samples)

    return use


def supervised_text(tok, item: dict) -> str:
    return tok.decode([i for i, lab in zip(item["input_ids"], item["labels"], strict=True) if lab != IGNORE_INDEX])


def unsupervised_text(tok, item: dict) -> str:
    return tok.decode([i for i, lab in zip(item["input_ids"], item["labels"], strict=True) if lab == IGNORE_INDEX])


def expected_supervised(conv: list[dict]) -> str:
    return "".join(f"{t['value']}<|im_end|>" for t in conv if t["from"] == "gpt")


# ---------------------------------------------------------------- corpus


def test_corpus_is_large_and_alternates(corpus):
    """The demo corpus has >1000 conversations, each human/gpt alternating, ids unique."""
    assert len(corpus) > 1000
    assert len({s["id"] for s in corpus}) == len(corpus)
    for s in corpus:
        roles = [t["from"] for t in s["conversations"]]
        assert len(roles) >= 2 and len(roles) % 2 == 0, s["id"]
        assert roles == ["human", "gpt"] * (len(roles) // 2), s["id"]
        assert all(isinstance(t["value"], str) for t in s["conversations"]), s["id"]


def test_corpus_no_sample_spelled_out_char_by_char(corpus):
    """No real sample is a string split into one-character turns (trivia.yml holds a bare-string entry)."""
    for s in corpus:
        assert not all(len(t["value"]) <= 1 for t in s["conversations"]), s["id"]


def test_corpus_file_shapes(tmp_path, monkeypatch):
    """Short and bare-string entries are left out, a trailing user turn dropped, numbers become strings."""
    (tmp_path / "demo.yml").write_text(
        "categories: [demo]\n"
        "conversations:\n"
        "- - Hi\n"
        "  - Hello\n"
        "- - lonely question\n"
        "- just one string, not a list\n"
        "- - What is 6 x 7?\n"
        "  - 42\n"
        "  - Thanks\n"
    )
    monkeypatch.setattr("vita.data.chatterbot.corpus_dir", lambda language="english": tmp_path)
    got = load_conversations()
    assert got == [
        {"id": "demo-0", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        {"id": "demo-3", "conversations": [{"from": "human", "value": "What is 6 x 7?"},
                                           {"from": "gpt", "value": "42"}]},
    ]


def test_corpus_unknown_file_and_language():
    """A missing corpus file or language is a DataError naming it."""
    with pytest.raises(DataError, match="nope.yml"):
        load_conversations(files=["nope.yml"])
    with pytest.raises(DataError, match="klingon"):
        load_conversations(language="klingon")


# ---------------------------------------------------------------- template + tokenisation


def test_labels_are_exactly_assistant_content_and_end_token(tok):
    """Supervised positions decode to each assistant reply plus <|im_end|>; the rest is -100."""
    segs = ChatML().segments(CONV, "s0")
    item = tokenize_segments(segs, tok, 1000, "s0")
    assert len(item["input_ids"]) == len(item["labels"])
    assert supervised_text(tok, item) == "Hi! How are you?<|im_end|>Great.<|im_end|>"
    # supervised labels are the input ids themselves (the model shifts them)
    assert all(lab in (IGNORE_INDEX, i) for i, lab in zip(item["input_ids"], item["labels"], strict=True))
    # system prompt, user turns and the role headers are all unsupervised
    assert unsupervised_text(tok, item) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n\n"
        "<|im_start|>user\nGood, thanks.<|im_end|>\n<|im_start|>assistant\n"
    )  # no newline after the last answer (as VITA renders it)
    assert tok.decode(item["input_ids"]) == "".join(text for text, _ in segs)


def test_system_prompt_override_and_none(tok):
    """template(system=...) replaces the default prompt; system='' drops the system turn."""
    custom = tokenize_segments(TEMPLATES.build("chatml", system="Be brief.").segments(CONV, "s"), tok, 1000, "s")
    assert tok.decode(custom["input_ids"]).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user")
    bare = tokenize_segments(TEMPLATES.build("chatml", system="").segments(CONV, "s"), tok, 1000, "s")
    assert tok.decode(bare["input_ids"]).startswith("<|im_start|>user\nHello there")
    assert supervised_text(tok, bare) == expected_supervised(CONV)


def test_whole_corpus_labels_exact(tok, corpus):
    """On every real conversation the supervised tokens decode to exactly the assistant turns."""
    items, skipped = tokenize_all(data_cfg(max_length=100_000), tok)
    convs = {s["id"]: s["conversations"] for s in corpus}
    assert not skipped and len(items) == len(convs)
    for item in items:
        assert supervised_text(tok, item) == expected_supervised(convs[item["id"]]), item["id"]


@pytest.mark.parametrize(
    "conv, turn",
    [
        ([{"from": "gpt", "value": "hi"}, {"from": "human", "value": "yo"}], 0),
        ([{"from": "human", "value": "a"}, {"from": "human", "value": "b"}], 1),
        ([{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}, {"from": "gpt", "value": "c"}], 2),
    ],
    ids=["starts-with-assistant", "two-user-turns", "two-assistant-turns"],
)
def test_bad_turn_order_names_sample_and_turn(conv, turn):
    """Turns out of order raise DataError naming the sample id and the offending turn."""
    with pytest.raises(DataError) as ei:
        ChatML().segments(conv, "bad-7")
    assert "sample 'bad-7'" in str(ei.value)
    assert f"turn {turn} " in str(ei.value)


def test_user_only_conversation_has_nothing_to_learn(tok):
    """A conversation without an assistant turn is a DataError (nothing supervised)."""
    segs = ChatML().segments([{"from": "user", "value": "anyone?"}], "lonely")
    with pytest.raises(DataError, match="sample 'lonely'.*no supervised token"):
        tokenize_segments(segs, tok, 1000, "lonely")


def test_truncation_keeps_a_prefix(tok):
    """A long sample is cut to max_length, keeping the supervised tokens that fit."""
    full = tokenize_segments(ChatML().segments(CONV, "s"), tok, 1000, "s")
    first_sup = next(i for i, lab in enumerate(full["labels"]) if lab != IGNORE_INDEX)
    cut = tokenize_segments(ChatML().segments(CONV, "s"), tok, first_sup + 3, "s")
    assert cut["input_ids"] == full["input_ids"][: first_sup + 3]
    assert cut["labels"] == full["labels"][: first_sup + 3]


def test_truncation_to_no_supervision_names_sample_and_max_length(tok):
    """Truncating before the first assistant token raises DataError naming the sample and data.max_length."""
    with pytest.raises(DataError) as ei:
        tokenize_segments(ChatML().segments(CONV, "long-1"), tok, 20, "long-1")
    assert "sample 'long-1'" in str(ei.value)
    assert "data.max_length=20" in str(ei.value)


def test_tokenize_all_fail_mode_names_sample_and_fix(tok, inline_data):
    """With on_bad_sample=fail a bad sample stops the run, naming it and the skip option."""
    inline_data([{"id": "ok-0", "conversations": CONV}, {"id": "bad-1", "conversations": CONV[1:]}])
    with pytest.raises(DataError) as ei:
        tokenize_all(data_cfg(format="inline"), tok)
    assert "sample 'bad-1'" in str(ei.value)
    assert "data.on_bad_sample=skip" in str(ei.value)


def test_tokenize_all_skip_mode_drops_and_counts(tok, inline_data, caplog):
    """With on_bad_sample=skip bad samples are dropped, counted by reason and logged."""
    long_conv = [{"from": "human", "value": "word " * 200}, {"from": "gpt", "value": "ok"}]
    inline_data([
        {"id": "ok-0", "conversations": CONV},
        {"id": "order-1", "conversations": CONV[1:3]},
        {"id": "long-2", "conversations": long_conv},
        {"id": "ok-3", "conversations": CONV[:2]},
    ])
    with caplog.at_level(logging.WARNING):
        items, skipped = tokenize_all(data_cfg(format="inline", on_bad_sample="skip", max_length=64), tok)
    assert [it["id"] for it in items] == ["ok-0", "ok-3"]
    assert sum(skipped.values()) == 2
    assert skipped["no supervised token left"] == 1
    assert "order-1" in caplog.text and "long-2" in caplog.text


def test_tokenize_all_no_usable_sample(tok, inline_data):
    """If every sample is skipped, the data set is reported unusable by name."""
    inline_data([{"id": "bad-0", "conversations": CONV[1:]}])
    with pytest.raises(DataError, match="data 'test': no usable sample"):
        tokenize_all(data_cfg(format="inline", on_bad_sample="skip"), tok)


def test_tokenize_all_limit(tok, corpus, inline_data):
    """data.limit keeps the first N samples, in order."""
    inline_data(corpus)
    items, _ = tokenize_all(data_cfg(format="inline", limit=7), tok)
    assert [it["id"] for it in items] == [s["id"] for s in corpus[:7]]


# ---------------------------------------------------------------- samplers


def test_random_sampler_deterministic_per_seed_and_epoch():
    """Same (seed, epoch) gives the same batches, on a fresh object too; another seed differs."""
    a = RandomSampler(num_samples=50, global_batch_size=8, seed=3)
    b = RandomSampler(num_samples=50, global_batch_size=8, seed=3)
    c = RandomSampler(num_samples=50, global_batch_size=8, seed=4)
    for epoch in range(3):
        assert [a.batch(epoch, s) for s in range(a.steps_per_epoch)] == [b.batch(epoch, s) for s in range(6)]
    assert a.batch(0, 0) != c.batch(0, 0)


def test_random_sampler_epochs_differ_and_batches_disjoint():
    """Each epoch is a different permutation; within an epoch, batches never repeat a sample."""
    s = RandomSampler(num_samples=50, global_batch_size=8, seed=0)
    assert s.steps_per_epoch == 6
    epochs = []
    for epoch in range(3):
        flat = [i for step in range(s.steps_per_epoch) for i in s.batch(epoch, step)]
        assert len(flat) == 48 and len(set(flat)) == 48
        assert all(0 <= i < 50 for i in flat)
        assert all(len(s.batch(epoch, step)) == 8 for step in range(s.steps_per_epoch))
        epochs.append(flat)
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]


def test_batch_is_pure_in_any_call_order():
    """batch(epoch, step) does not depend on earlier calls (repeated or out of order)."""
    s = RandomSampler(num_samples=30, global_batch_size=4, seed=9)
    first = s.batch(2, 5)
    s.batch(0, 1), s.batch(7, 0), s.batch(2, 0)
    assert s.batch(2, 5) == first
    assert RandomSampler(num_samples=30, global_batch_size=4, seed=9).batch(2, 5) == first


def test_sequential_sampler():
    """The sequential sampler walks the data in order, every epoch the same."""
    s = SequentialSampler(num_samples=10, global_batch_size=3)
    assert s.steps_per_epoch == 3
    assert [s.batch(1, k) for k in range(3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


@pytest.mark.parametrize("key", ["random", "sequential"])
def test_too_few_samples_for_one_global_batch(key):
    """Fewer samples than one global batch is a ConfigError naming both numbers and the knobs."""
    with pytest.raises(ConfigError) as ei:
        SAMPLERS.build(key, num_samples=3, global_batch_size=4, seed=0)
    assert "3 samples" in str(ei.value) and "global batch of 4" in str(ei.value)
    assert "engine.micro_batch_size" in str(ei.value)


# ---------------------------------------------------------------- collator + loader


def fake_items(n: int) -> list[dict]:
    """Samples of varying length whose token ids encode their index."""
    return [{"id": f"s{i}", "input_ids": [i + 1] * (1 + i % 5), "labels": [i + 1] * (1 + i % 5)} for i in range(n)]


def ids_of(micro_batches: list[dict]) -> list[list[str]]:
    return [mb["ids"] for mb in micro_batches]


def test_collator_pads():
    """Right-padding with the pad id; labels -100 and attention 0 on padding."""
    items = [{"id": "a", "input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
             {"id": "b", "input_ids": [8], "labels": [8]}]
    out = Collator(pad_id=0)(items)
    assert out["ids"] == ["a", "b"]
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert out["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["input_ids"].dtype == out["labels"].dtype == torch.long


def make_loader(n: int, *, rank: int, world: int, micro: int, accum: int, seed: int = 1) -> StepLoader:
    sampler = RandomSampler(num_samples=n, global_batch_size=micro * accum * world, seed=seed)
    return StepLoader(TokenizedDataset(fake_items(n)), sampler, Collator(0), rank=rank, world=world,
                      micro_batch_size=micro, grad_accum=accum)


def test_two_ranks_split_the_same_global_batch():
    """Ranks 0+1 (micro 2, accum 1) see, in order, the micro-batches of 1 rank with micro 2, accum 2."""
    r0 = make_loader(23, rank=0, world=2, micro=2, accum=1)
    r1 = make_loader(23, rank=1, world=2, micro=2, accum=1)
    single = make_loader(23, rank=0, world=1, micro=2, accum=2)
    steps = 12  # > 2 epochs of 5 steps
    for (p0, m0), (p1, m1), (ps, ms) in itertools.islice(zip(r0.iterate(Position()), r1.iterate(Position()),
                                                            single.iterate(Position()), strict=True), steps):
        assert p0 == p1 == ps
        assert len(m0) == len(m1) == 1 and len(ms) == 2
        assert ids_of(m0 + m1) == ids_of(ms)
        for a, b in zip(m0 + m1, ms, strict=True):
            assert torch.equal(a["input_ids"], b["input_ids"])
        assert not set(m0[0]["ids"]) & set(m1[0]["ids"])


def test_positions_count_steps_and_wrap_epochs():
    """Yielded positions are consecutive steps, wrapping to the next epoch after steps_per_epoch."""
    loader = make_loader(22, rank=0, world=1, micro=2, accum=2)  # global 4 -> 5 steps/epoch
    got = [(p.epoch, p.step) for p, _ in itertools.islice(loader.iterate(Position()), 12)]
    assert got == [(e, s) for e in range(3) for s in range(5)][:12]


def test_starting_the_loader_leaves_the_global_rng_alone():
    """A resumed run restores torch's RNG before its loader starts: starting one must not draw from it (dropout
    would then differ from the run never stopped). The loader's worker seed comes from its own generator."""
    loader = make_loader(22, rank=0, world=1, micro=2, accum=2)
    for start in (Position(), Position(1, 3)):
        before = torch.get_rng_state()
        next(iter(loader.iterate(start)))
        assert torch.equal(torch.get_rng_state(), before), start


def test_micro_batches_follow_the_sampler():
    """Step (e, s) is made of sampler.batch(e, s), cut into grad_accum micro-batches."""
    loader = make_loader(22, rank=0, world=1, micro=2, accum=2)
    for pos, mbs in itertools.islice(loader.iterate(Position()), 7):
        want = [f"s{i}" for i in loader.sampler.batch(pos.epoch, pos.step)]
        assert ids_of(mbs) == [want[:2], want[2:]]


@pytest.mark.parametrize("start", [Position(0, 3), Position(1, 0), Position(1, 4), Position(2, 1)],
                         ids=lambda p: f"e{p.epoch}s{p.step}")
def test_resume_from_position_is_the_exact_tail(start):
    """Iterating from Position(e, s) yields exactly the tail of an uninterrupted iteration."""
    loader = make_loader(22, rank=1, world=2, micro=1, accum=2)  # global 4 -> 5 steps/epoch
    full = list(itertools.islice(loader.iterate(Position()), 15))
    offset = start.epoch * loader.sampler.steps_per_epoch + start.step
    fresh = make_loader(22, rank=1, world=2, micro=1, accum=2)
    tail = list(itertools.islice(fresh.iterate(start), 15 - offset))
    assert [p for p, _ in tail] == [p for p, _ in full[offset:]]
    assert [ids_of(m) for _, m in tail] == [ids_of(m) for _, m in full[offset:]]
    assert tail[0][0] == start


def test_start_past_epoch_end_wraps():
    """A start step at/after the epoch's end (e.g. resumed with a larger world) begins the next epoch,
    and the yielded position says so."""
    loader = make_loader(22, rank=0, world=1, micro=2, accum=2)  # 5 steps/epoch
    got = list(itertools.islice(loader.iterate(Position(0, 5)), 6))
    assert [(p.epoch, p.step) for p, _ in got] == [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0)]
    for pos, mbs in got:
        assert sum(ids_of(mbs), []) == [f"s{i}" for i in loader.sampler.batch(pos.epoch, pos.step)]


def test_position_state_dict():
    """A position saves as plain ints."""
    assert Position(2, 7).state_dict() == {"epoch": 2, "step": 7}


def test_build_data_per_rank(tok, corpus, inline_data):
    """build_data tokenises, sizes the global batch by world size and gives each rank its share."""
    inline_data(corpus)
    cfg = OmegaConf.create({
        "data": OmegaConf.structured(DataConfig(name="t", format="inline", limit=40)),
        "engine": OmegaConf.structured(EngineConfig(micro_batch_size=2, grad_accum=3)),
        "train": OmegaConf.structured(TrainConfig(seed=5)),
    })
    b0, b1 = build_data(cfg, tok, rank=0, world=2), build_data(cfg, tok, rank=1, world=2)
    assert len(b0.dataset) == 40 and b0.sampler.global_batch_size == 12 and b0.sampler.steps_per_epoch == 3
    (_, m0), (_, m1) = next(b0.loader.iterate(Position())), next(b1.loader.iterate(Position()))
    assert len(m0) == len(m1) == 3
    ids0, ids1 = sum(ids_of(m0), []), sum(ids_of(m1), [])
    assert len(ids0) == len(ids1) == 6 and not set(ids0) & set(ids1)
    assert m0[0]["input_ids"][m0[0]["attention_mask"] == 0].eq(tok.pad_token_id).all()
