"""Over-long samples under each ``data.overlong`` policy: ``truncate`` warns once and counts (samples and
the supervised tokens cut), ``skip`` drops and counts, ``fail`` stops naming file:line; a cut that leaves
no supervised token is a bad sample under ``data.on_bad_sample``; ``vita.check`` lists each one."""

from __future__ import annotations

import io
import json
import logging

import pytest
from omegaconf import OmegaConf

from tests.data_fixtures import tokenizer
from vita.config import DataConfig, EngineConfig, SourceConfig, TrainConfig
from vita.data import build_data
from vita.data.loader import Position
from vita.data.tokenize import tokenize_segments
from vita.errors import DataError
from vita.model.omni import IGNORE_INDEX
from vita.registry import TEMPLATES

MAX = 64


def conv(*pairs: tuple[str, str]) -> list[dict]:
    return [t for q, a in pairs for t in ({"from": "human", "value": q}, {"from": "gpt", "value": a})]


ROWS = [  # id -> conversation; "long-*" exceed MAX tokens but keep their first answer
    ("short-0", conv(("Hi?", "Hello."))),
    ("long-1", conv(("Hi?", "Hello."), ("word " * 80, "A long reply that is cut off."))),
    ("short-2", conv(("How are you?", "Fine."))),
    ("long-3", conv(("Yes?", "No."), ("again " * 90, "Cut too."))),
    ("short-4", conv(("Name?", "Vita."))),
]


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


def write(tmp_path, rows) -> str:
    p = tmp_path / "long.jsonl"
    p.write_text("".join(json.dumps({"id": sid, "conversations": c}) + "\n" for sid, c in rows))
    return str(p)


def cfg_for(path: str, micro: int = len(ROWS), **kw):
    d = OmegaConf.merge(OmegaConf.structured(DataConfig), {
        "name": "long", "format": "vita", "template": "chatml", "system_prompt": "", "max_length": MAX, "sampler": "sequential",
        "index_cache": False, "datasets": [SourceConfig(name="long", annotations=[path])], **kw})
    return OmegaConf.create({"data": d, "engine": OmegaConf.structured(EngineConfig(micro_batch_size=micro)),
                             "train": OmegaConf.structured(TrainConfig(seed=0))})


def expected_lost(tok, c) -> int:
    """Supervised tokens past MAX, from the whole tokenised sample (independent of the index code)."""
    full = tokenize_segments(TEMPLATES.build("chatml", system="").segments(c, "x"), tok, 100_000, "x")
    assert len(full["input_ids"]) > MAX
    return sum(1 for lab in full["labels"][MAX:] if lab != IGNORE_INDEX)


def test_truncate_warns_once_and_counts_lost_supervision(tmp_path, tok, caplog):
    """Default policy: over-long samples are kept cut to max_length, one warning names how many and the
    first ones, and the metrics count them and the supervised tokens lost."""
    path = write(tmp_path, ROWS)
    with caplog.at_level(logging.WARNING, logger="vita"):
        b = build_data(cfg_for(path), tok, rank=0, world=1)
    warnings = [r.getMessage() for r in caplog.records if "exceed data.max_length" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert "2 sample(s) exceed data.max_length=64 and are truncated" in warnings[0]
    assert f"{path}:2 sample 'long-1'" in warnings[0] and f"{path}:4 sample 'long-3'" in warnings[0]
    lost = expected_lost(tok, ROWS[1][1]) + expected_lost(tok, ROWS[3][1])
    counts = b.skip_counts()
    assert counts == {"overlong/truncated": 2, "overlong/lost_supervised_tokens": lost}
    (_, (mb,)), = [next(iter(b.loader.iterate(Position())))]
    assert sorted(mb["ids"]) == sorted(sid for sid, _ in ROWS)
    assert mb["input_ids"].shape[1] == MAX


def test_skip_drops_and_counts_even_under_on_bad_sample_fail(tmp_path, tok, caplog):
    """overlong=skip drops the over-long samples (counted per reason), whatever on_bad_sample says."""
    path = write(tmp_path, ROWS)
    with caplog.at_level(logging.WARNING, logger="vita"):
        b = build_data(cfg_for(path, micro=3, overlong="skip", on_bad_sample="fail"), tok, rank=0, world=1)
    assert len(b.dataset) == 3
    assert b.skip_counts() == {"skipped/over_long_sample": 2}
    assert "2 sample(s) exceed data.max_length=64 and are skipped (data.overlong=skip)" in caplog.text
    (_, (mb,)), = [next(iter(b.loader.iterate(Position())))]
    assert sorted(mb["ids"]) == ["short-0", "short-2", "short-4"]


def test_fail_stops_naming_file_and_line(tmp_path, tok):
    """overlong=fail stops at the first over-long sample (in the mixture's order) with file:line, its length, the limit and the fix."""
    path = write(tmp_path, ROWS)
    with pytest.raises(DataError, match=rf"{path}:(2 sample 'long-1'|4 sample 'long-3'): over-long sample: \d+ tokens > "
                                        r"data\.max_length=64; set data\.overlong=truncate or skip"):
        build_data(cfg_for(path, overlong="fail", on_bad_sample="skip"), tok, rank=0, world=1)


def test_truncation_to_no_supervision_is_a_bad_sample(tmp_path, tok):
    """A cut that leaves no supervised token follows on_bad_sample: fail names it, skip drops and counts it."""
    rows = [*ROWS[:1], ("cut-answer", conv(("word " * 100, "Lost answer.")))]
    path = write(tmp_path, rows)
    with pytest.raises(DataError, match=rf"{path}:2 sample 'cut-answer': no supervised token left: truncated "
                                        r"from \d+ tokens to data\.max_length=64"):
        build_data(cfg_for(path), tok, rank=0, world=1)
    b = build_data(cfg_for(path, micro=1, on_bad_sample="skip"), tok, rank=0, world=1)
    assert len(b.dataset) == 1 and b.skip_counts() == {"skipped/no_supervised_token_left": 1}


@pytest.mark.parametrize("policy", ["truncate", "fail"])
def test_check_lists_each_over_long_sample(tmp_path, tok, policy):
    """vita.check prints every over-long sample with its token count and the limit; they are problems
    only when the run would stop on them (overlong=fail)."""
    from vita.check import run_check

    path = write(tmp_path, ROWS)
    cfg = cfg_for(path, overlong=policy)
    cfg.model = {"tokenizer": tokenizer().name_or_path, "pretrained": None, "trust_remote_code": False}
    out = io.StringIO()
    n_bad = run_check(cfg, workers=1, out=out)
    text = out.getvalue()
    assert n_bad == (2 if policy == "fail" else 0)
    assert f"over-long: 2 sample(s) > data.max_length {MAX}" in text
    for sid, line in (("long-1", 2), ("long-3", 4)):
        assert f"{path}:{line} sample '{sid}': " in text and f" tokens > {MAX}" in text
    if policy == "truncate":
        lost = expected_lost(tok, ROWS[1][1])
        assert f"{path}:2 sample 'long-1': " in text and f"> {MAX}, {lost} supervised tokens lost" in text
