"""The bad-sample corpus: ``vita.check`` reports every kind with its location; training with
``data.on_bad_sample=skip`` completes on the rest with per-reason counts in the metrics; ``fail``
stops with the sample's location."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import run_vita
from tests.data_fixtures import demo_root, tokenizer
from vita.config import DataConfig, EngineConfig, TrainConfig, register_resolvers
from vita.data import build_data
from vita.data.bad_corpus import EXPECTED, GOOD
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


def test_corpus_has_at_least_15_kinds():
    """The corpus covers at least 15 distinct kinds of problems."""
    assert len(set(EXPECTED.values())) >= 15


def test_check_reports_every_kind_with_location():
    """vita.check lists each bad sample with its kind and file:line, counts the good ones, returns problems."""
    from vita.check import run_check

    root = demo_root()
    out = io.StringIO()
    n_bad = run_check(compose(["experiment=chatterbot_tiny", "data=demo_bad"]), workers=2, examples=10, out=out)
    text = out.getvalue()
    assert n_bad == len(EXPECTED)
    lines = (root / "bad" / "bad.jsonl").read_bytes().splitlines()
    for key, kind in EXPECTED.items():
        if key.startswith("@"):
            lineno = next(k + 1 for k, ln in enumerate(lines) if key[1:].encode() in ln or
                          (key == "@not-object" and ln.startswith(b"[")) or (key == "@non-utf8" and b"\xe9" in ln))
            assert f"bad.jsonl:{lineno}: {kind}:" in text, key
        else:
            assert f"sample '{key}': {kind}:" in text, key
            lineno = next(k + 1 for k, ln in enumerate(lines) if f'"id": "{key}"'.encode() in ln)
            assert f"bad.jsonl:{lineno} sample '{key}'" in text
    assert f"{len(GOOD)} ok" in text and "FAIL" in text


def test_check_cli_exit_codes():
    """The command exits 1 on the bad corpus and 0 on the clean demo text."""
    import subprocess

    from tests.conftest import PY, ROOT, vita_env

    demo_root()
    bad = subprocess.run([PY, "-m", "vita.check", "data=demo_bad", "--workers=1"], cwd=ROOT, env=vita_env(),
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "with problems" in bad.stdout
    ok = subprocess.run([PY, "-m", "vita.check", "data=chatterbot", "data.limit=30", "--workers=1"], cwd=ROOT,
                        env=vita_env(), capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]


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


def test_skip_policy_keeps_only_good_samples_and_counts():
    """With skip, the index drops every header-detectable problem; the truncated JPEG fails at decode
    and is dropped from its micro-batch (never replaced), counted per reason."""
    demo_root()
    b = build_data(bad_cfg(on_bad_sample="skip", sampler="sequential"), tokenizer(), rank=0, world=1)
    assert len(b.dataset) == len(GOOD) + 1  # + truncated-jpeg, whose header reads fine
    (_, (mb,)), = [next(iter(b.loader.iterate(Position())))]
    assert sorted(mb["ids"]) == sorted(GOOD)
    counts = b.skip_counts()
    assert counts["skipped/unreadable_image"] == 2  # corrupt png at indexing + truncated jpeg at decoding
    assert sum(counts.values()) == len(EXPECTED)


@pytest.mark.slow
def test_training_with_skip_completes_and_logs_counts(tmp_path):
    """python -m vita.run data=demo_bad data.on_bad_sample=skip trains to the end; metrics count skips per reason."""
    demo_root()
    run_vita(["experiment=chatterbot_tiny", "model=tiny_omni", "data=demo_bad", "data.on_bad_sample=skip",
              "train.max_steps=3", "engine.micro_batch_size=2",
              f"output_root={tmp_path}", "logging.progress_bar=false", "logging.plot=false"])
    metrics = [json.loads(ln) for ln in next(tmp_path.rglob("metrics.jsonl")).read_text().splitlines()]
    last = metrics[-1]
    assert last["step"] == 3
    assert last["skipped/missing_file"] == 1 and last["skipped/path_escapes_root"] == 1
    assert sum(v for k, v in last.items() if k.startswith("skipped/")) >= len(EXPECTED) - 1


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
