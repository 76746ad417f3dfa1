"""The bad-sample corpus: ``vita.check`` reports every kind with its location; training with
``data.on_bad_sample=skip`` completes on the rest with per-reason counts in the metrics; ``fail``
stops with the sample's location."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import run_vita
from tests.data_fixtures import demo_root, tokenizer
from vita.config import DataConfig, EngineConfig, TrainConfig, register_resolvers
from vita.data import build_data
from vita.data.bad_corpus import DECODE_TIME, EXPECTED, GOOD, IDS
from vita.data.loader import Position
from vita.errors import DataError

register_resolvers()


def compose(overrides: list[str]):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    from vita.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hcompose("config", overrides=overrides)
    OmegaConf.resolve(cfg)
    return cfg


def test_corpus_has_at_least_25_kinds():
    """The corpus covers at least 25 distinct kinds of problems, among them the ones users meet at scale."""
    kinds = set(EXPECTED.values())
    assert len(kinds) >= 25
    assert {"audio too long", "no decodable frame", "image too small", "non-UTF-8 bytes", "duplicate id",
            "conversations not a list", "two user turns in a row", "too many images", "no supervised text",
            "no supervised token left"} <= kinds


def test_check_reports_every_kind_with_location():
    """vita.check names each bad record with file:line, sample id and kind (and a fix), lists the over-long
    sample with its token count and the limit, counts the good ones and returns the number of problems."""
    from vita.check import run_check

    root = demo_root()
    out = io.StringIO()
    n_bad = run_check(compose(["experiment=chatterbot_tiny", "data=demo_bad"]), workers=2, examples=10, out=out)
    text = out.getvalue()
    assert n_bad == len(EXPECTED)
    written = json.loads((root / "bad" / "expected.json").read_text())
    assert set(written) == set(EXPECTED)
    lines = {f: (root / "bad" / f).read_bytes().splitlines() for f in ("bad.jsonl", "list.json")}
    for label, kind in EXPECTED.items():
        w = written[label]
        if IDS[label] is not None:  # the line written is the one holding the record's id
            assert f'"id": "{IDS[label]}"'.encode() in lines[w["file"]][w["line"] - 1], label
        sid = f" sample '{IDS[label]}'" if IDS[label] is not None else ""
        line = next((ln for ln in text.splitlines() if f"{w['file']}:{w['line']}{sid}: {kind}: " in ln), None)
        assert line is not None, f"{label}: no report line for {w} {kind}\n{text}"
        assert re.search(r"; (fix|drop|re-encode|re-export|use|remove|put|add|give|write|raise|merge|split|end|keep|cut|turns "
                         r"must|it must)\b|\bmust\b", line), line  # every message says what to do
    assert f"{len(GOOD) - 1} ok" in text and "1 ok" in text and "FAIL" in text  # 'bad' and 'listed' datasets
    assert re.search(r"bad\.jsonl:\d+ sample 'truncated-ok': \d+ tokens > 512, [1-9]\d* supervised tokens lost", text)


def test_check_cli_exit_code_on_problems(capsys):
    """The command's main() returns exit code 1 on the bad corpus (``python -m vita.check`` in a subprocess,
    with exit 0 on clean data and 2 on a config error: tests/test_config_dirs.py::test_check_runs_on_user_data)."""
    from vita.check import main

    demo_root()
    assert main(["data=demo_bad", "--workers=1"]) == 1
    assert "with problems" in capsys.readouterr().out


def bad_cfg(**kw):
    d = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(Path("conf/data/demo_bad.yaml")), kw)
    cfg = OmegaConf.create({"data": d, "engine": OmegaConf.structured(EngineConfig(micro_batch_size=7)),
                            "train": OmegaConf.structured(TrainConfig(seed=0))})
    OmegaConf.resolve(cfg)
    return cfg


def test_fail_policy_stops_with_location():
    """on_bad_sample=fail stops at the first bad record, naming file:line, kind and the fix."""
    demo_root()
    with pytest.raises(DataError, match=r"bad\.jsonl:\d+ sample '[a-z-]+': .*data\.on_bad_sample=skip"):
        build_data(bad_cfg(), tokenizer(), rank=0, world=1)


# the good records of the corpus: dup-id is the first of two records with that id, truncated-ok is over-long
# but keeps its first answer, good-json is the ASCII record of the Latin-1 JSON list
TRAINED_ON = ["good-image", "good-audio", "good-text-0", "good-text-1", "good-text-2", "good-text-3", "dup-id",
              "truncated-ok", "good-json"]


def test_skip_policy_trains_on_exactly_the_good_samples():
    """With skip, the index drops every header-detectable problem; the records whose headers read fine
    (truncated JPEG, AVI without a decodable frame, WAV with a NaN) fail at decode and are dropped from
    their micro-batch (never replaced). One epoch of the loader the trainer uses yields exactly the good
    ids; every problem is counted per reason."""
    demo_root()
    n_items = len(GOOD) + len(DECODE_TIME)
    cfg = bad_cfg(on_bad_sample="skip", sampler="sequential")
    cfg.engine.micro_batch_size = n_items
    b = build_data(cfg, tokenizer(), rank=0, world=1)
    assert len(b.dataset) == n_items
    assert b.sampler.steps_per_epoch == 1
    (_, (mb,)), = [next(iter(b.loader.iterate(Position())))]
    assert sorted(mb["ids"]) == sorted(GOOD) == sorted(TRAINED_ON)
    counts = b.skip_counts()
    assert counts["skipped/unreadable_image"] == 2  # corrupt png at indexing + truncated jpeg at decoding
    assert counts["skipped/no_decodable_frame"] == 1 and counts["skipped/non_finite_audio"] == 1
    assert counts["skipped/duplicate_id"] == 1 and counts["skipped/audio_too_long"] == 1
    assert sum(v for k, v in counts.items() if k.startswith("skipped/")) == len(EXPECTED)
    assert counts["overlong/truncated"] == 1 and counts["overlong/lost_supervised_tokens"] > 0


@pytest.mark.slow
def test_training_with_skip_completes_and_logs_counts(tmp_path):
    """python -m vita.run data=demo_bad data.on_bad_sample=skip trains to the end over one whole epoch (3 steps of
    4 of the 12 usable items), so every bad kind of the corpus is drawn: the index-time ones and the decode-time
    ones. The audio encoder is a (tiny) Whisper: its 25 ms FFT window makes the 10 ms clip empty media, not a
    padding error in the feature code. Every bad record is counted by its reason and named by file:line."""
    root = demo_root()
    proc = run_vita(["experiment=chatterbot_tiny", "model=tiny_omni", "model.audio.encoder=tiny-whisper",
                     "data=demo_bad", "data.on_bad_sample=skip", "train.max_steps=3", "engine.micro_batch_size=4",
                     f"output_root={tmp_path}", "logging.progress_bar=false", "logging.plot=false"])
    metrics = [json.loads(ln) for ln in next(tmp_path.rglob("metrics.jsonl")).read_text().splitlines()]
    last = metrics[-1]
    assert last["step"] == 3
    counted = {k: v for k, v in last.items() if k.startswith("skipped/")}
    expected = Counter("skipped/" + re.sub(r"[^A-Za-z0-9]+", "_", kind) for kind in EXPECTED.values())
    assert counted == dict(expected), set(counted.items()) ^ set(expected.items())
    skipped = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "skipping " in ln]
    where = json.loads((root / "bad" / "expected.json").read_text())
    for label, w in where.items():
        assert any(f"{w['file']}:{w['line']}" in ln and w["kind"] in ln for ln in skipped), (label, w)


def test_fail_policy_at_decode_time_names_the_file(tmp_path):
    """A file whose header is fine but whose data is not (truncated JPEG) stops a ``fail`` run when its
    batch is loaded, in worker processes too, naming the sample, the file and the fix."""
    from vita.config import SourceConfig

    root = demo_root()
    ann = tmp_path / "t.jsonl"
    rows = [{"id": f"ok-{k}", "image": "good.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"},
                                                                   {"from": "gpt", "value": "An astronaut."}]}
            for k in range(3)]
    rows.append({"id": "trunc", "image": "truncated.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A rocket."}]})
    ann.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = bad_cfg(sampler="sequential", num_workers=2,
                  datasets=[SourceConfig(name="t", annotations=[str(ann)], image_root=str(root / "bad" / "media"))])
    cfg.engine.micro_batch_size = 4
    b = build_data(cfg, tokenizer(), rank=0, world=1)
    with pytest.raises(DataError, match=r"t\.jsonl:4 sample 'trunc': unreadable image: .*truncated\.jpg.*on_bad_sample=skip"):
        next(iter(b.loader.iterate(Position())))


def test_check_on_the_default_experiment_uses_the_models_encoders(capsys):
    """A bare ``python -m vita.check`` (the omni demo: smol_omni on demo_cards, no data.media_spec) measures
    the audio with the model's own encoder counts instead of refusing media for want of a spec."""
    from vita.check import main

    demo_root()
    assert main(["--workers=1"]) == 0
    out = capsys.readouterr().out
    assert "encoders' token counts" in out and "0 with problems" in out and "audio" in out
