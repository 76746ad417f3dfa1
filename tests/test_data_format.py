"""Sample format, sources and the media dataset: validation, confinement to the media root,
mixtures, lazy JSONL, exact placeholder counts in built batches, collation order."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from tests.data_fixtures import demo_root, tokenizer
from vita.config import DataConfig, EngineConfig, SourceConfig, TrainConfig, register_resolvers
from vita.data import build_data, make_processor, open_source, resolve_spec
from vita.data.loader import Position
from vita.data.schema import AnnotationFile, BadSample, parse_sample
from vita.data.sources import Mixture
from vita.errors import DataError

register_resolvers()
CONV = [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A cat."}]


@pytest.fixture
def root(tmp_path):
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.png").write_bytes(b"x")
    (tmp_path / "secret.png").write_bytes(b"x")
    return tmp_path


def kind_of(raw, root) -> str:
    with pytest.raises(BadSample) as ei:
        parse_sample(raw, "f.jsonl:3", {"image": root / "media"})
    assert "f.jsonl:3" in str(ei.value)
    return ei.value.kind


def test_valid_sample_roles_and_paths(root):
    """user/assistant aliases, paths resolved inside the root, modality from media."""
    s = parse_sample({"id": "x", "image": "a.png", "conversations": [{"from": "user", "value": "<image>hi"},
                                                                      {"from": "assistant", "value": "yo"}]},
                     "f:1", {"image": root / "media"})
    assert s.turns == [("user", "<image>hi"), ("assistant", "yo")]
    assert s.media["image"] == [(root / "media" / "a.png").resolve()] and s.modality == "image"


@pytest.mark.parametrize("raw, kind", [
    ({"id": "x", "image": "../secret.png", "conversations": CONV}, "path escapes root"),
    ({"id": "x", "image": "sub/../../secret.png", "conversations": CONV}, "path escapes root"),
    ({"id": "x", "image": "/etc/passwd", "conversations": CONV}, "absolute path"),
    ({"id": "x", "image": "C:\\data\\a.png", "conversations": CONV}, "absolute path"),
    ({"id": "x", "image": "b.png", "conversations": CONV}, "missing file"),
    ({"id": "x", "image": ["a.png", "a.png"], "conversations": CONV}, "marker/media mismatch"),
    ({"id": "x", "conversations": CONV}, "marker/media mismatch"),
    ({"id": "x", "conversations": []}, "empty conversation"),
    ({"id": "x", "conversations": CONV[::-1]}, "assistant first"),
    ({"id": "x", "image": "a.png", "conversations": CONV + CONV[:1]}, "no answer"),
    ({"id": "x", "audio": "a.wav", "conversations": [{"from": "human", "value": "<audio>"},
                                                     {"from": "gpt", "value": "a"}]}, "no media root"),
    ("just a string", "not an object"),
])
def test_bad_samples_are_named(root, raw, kind):
    """Each problem has its kind and the location in the message."""
    assert kind_of(raw, root) == kind


def test_jsonl_offsets_and_bad_lines(tmp_path):
    """JSONL is read one line at a time by offset; line numbers skip blanks; bad lines are BadSample."""
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"id": "a"}\n\n{"id": "b"}\n{broken\n\xff\xfe\n')
    f = AnnotationFile(p)
    assert len(f) == 4 and f.read(1) == {"id": "b"} and f.where(1) == f"{p}:3"
    with pytest.raises(BadSample, match="malformed JSON line"):
        f.read(2)
    with pytest.raises(BadSample, match="non-UTF-8"):
        f.read(3)


def test_json_list_and_missing_file(tmp_path):
    """A .json list works; a missing or non-list file is a DataError naming it."""
    (tmp_path / "a.json").write_text(json.dumps([{"id": "a"}, {"id": "b"}]))
    assert AnnotationFile(tmp_path / "a.json").read(1) == {"id": "b"}
    with pytest.raises(DataError, match="nope.json"):
        AnnotationFile(tmp_path / "nope.json")
    (tmp_path / "d.json").write_text("{}")
    with pytest.raises(DataError, match="list of samples"):
        AnnotationFile(tmp_path / "d.json")


def test_mixture_ratios_and_determinism(tmp_path):
    """Ratios subsample (or repeat) each dataset; the shuffle depends on the seed only."""
    for name, n in (("a", 10), ("b", 20)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"id": f"{name}{i}"}) + "\n" for i in range(n)))
    ds = [SourceConfig(name="a", annotations=[str(tmp_path / "a.jsonl")], ratio=2.0),
          SourceConfig(name="b", annotations=[str(tmp_path / "b.jsonl")], ratio=0.25)]
    m = Mixture(ds, seed=1)
    ids = [m.read(i)[0]["id"] for i in range(len(m))]
    assert len(m) == 20 + 5
    assert sorted(i for i in ids if i.startswith("a")) == sorted([f"a{i}" for i in range(10)] * 2)
    assert len({i for i in ids if i.startswith("b")}) == 5
    assert ids == [Mixture(ds, seed=1).read(i)[0]["id"] for i in range(25)]
    assert ids != [Mixture(ds, seed=2).read(i)[0]["id"] for i in range(25)]
    assert m.dataset_of(0) in ("a", "b")


def demo_cfg(**kw):
    cfg = OmegaConf.create({
        "data": OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load("conf/data/demo.yaml"), kw),
        "engine": OmegaConf.structured(EngineConfig(micro_batch_size=4, grad_accum=1)),
        "train": OmegaConf.structured(TrainConfig(seed=3)),
    })
    OmegaConf.resolve(cfg)
    return cfg


def test_header_counts_equal_decoded_counts():
    """For every demo sample, tokens measured from headers equal the tokens of the decoded sample,
    and each placeholder block has exactly the media's tokens (tiles/frames x tokens per tile, audio)."""
    demo_root()
    tok = tokenizer()
    cfg = demo_cfg()
    spec = resolve_spec(cfg.data, tok, None)
    source, proc = open_source(cfg.data), make_processor(cfg.data, tok, spec)
    seen = set()
    for i in range(len(source)):
        raw, where, roots, name = source.read(i)
        if name in seen and name != "spoken":
            continue
        seen.add(name)
        n, _ = proc.measure(raw, where, roots)
        item = proc.load(raw, where, roots)
        ids = item["input_ids"]
        assert len(ids) == n, where
        vis = ids.count(spec.image_token_id) + ids.count(spec.video_token_id)
        assert vis == (item["pixel_values"].shape[0] * spec.tokens_per_tile if "pixel_values" in item else 0)
        want_audio = sum(spec.audio_num_tokens(a.shape[0]) for a in item.get("audio_features", []))
        assert ids.count(spec.audio_token_id) == want_audio
    assert {"images", "speech", "video", "spoken", "text"} <= seen


def test_batches_carry_media_in_placeholder_order():
    """A built batch: pixel rows = visual placeholders / tokens_per_tile, in row-major block order;
    audio features padded with their lengths; absent modalities are absent keys."""
    demo_root()
    tok = tokenizer()
    cfg = demo_cfg(sampler="sequential")
    bundle = build_data(cfg, tok, rank=0, world=1)
    spec = resolve_spec(cfg.data, tok, None)
    kinds = set()
    for _, (mb,) in zip(range(25), (m for _, m in bundle.loader.iterate(Position()))):
        ids = mb["input_ids"]
        vis = (ids == spec.image_token_id) | (ids == spec.video_token_id)
        n_vis = int(vis.sum())
        assert ("pixel_values" in mb) == (n_vis > 0)
        if n_vis:
            kinds.add("visual")
            assert mb["pixel_values"].shape[0] * spec.tokens_per_tile == n_vis
            assert mb["pixel_values"].shape[1:] == (3, 28, 28)
        n_aud = int((ids == spec.audio_token_id).sum())
        assert ("audio_features" in mb) == (n_aud > 0)
        if n_aud:
            kinds.add("audio")
            assert sum(spec.audio_num_tokens(int(n)) for n in mb["audio_lengths"]) == n_aud
            assert mb["audio_features"].shape[0] == len(mb["audio_lengths"])
            assert mb["audio_features"].shape[1] == int(mb["audio_lengths"].max())
        assert mb["labels"][mb["attention_mask"] == 0].eq(-100).all()
    assert kinds == {"visual", "audio"}


def test_collator_orders_media_row_major():
    """Pixel rows follow the samples' order in the batch; each sample's rows stay together."""
    from vita.data.collate import Collator

    items = [{"id": "a", "input_ids": [1, 9, 9], "labels": [1, 9, 9], "pixel_values": torch.zeros(1, 3, 2, 2)},
             {"id": "b", "input_ids": [2], "labels": [2]},
             {"id": "c", "input_ids": [3, 9, 9, 9, 9], "labels": [3] * 5, "pixel_values": torch.ones(2, 3, 2, 2)},
             {"id": "d", "bad": ("missing file", "f:4 sample 'd': missing file")}]
    out = Collator(0)(items)
    assert out["ids"] == ["a", "b", "c"] and out["pixel_values"][:, 0, 0, 0].tolist() == [0, 1, 1]
    assert out["skipped"] == [("d", "missing file", "f:4 sample 'd': missing file")]
    assert "audio_features" not in out


def test_index_cache_round_trip(tmp_path, monkeypatch):
    """A second build reads the cached index (same lengths, same skips); touching an annotation
    file invalidates it."""
    import os

    from vita.data import index_cache
    from vita.data.dataset import index

    monkeypatch.setenv("VITA_INDEX_CACHE", str(tmp_path / "cache"))
    ann = tmp_path / "a.jsonl"
    good = {"id": "g", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    ann.write_text(json.dumps(good) + "\n" + json.dumps({"id": "b", "conversations": []}) + "\n")
    cfg = OmegaConf.structured(DataConfig(name="t", format="vita", datasets=[SourceConfig(name="a", annotations=[str(ann)])]))
    tok = tokenizer()
    src, proc = open_source(cfg), make_processor(cfg, tok, None)
    first = index(src, proc, "skip", use_cache=True)
    key = index_cache.cache_key(src, proc)
    assert (tmp_path / "cache" / f"{key}.npz").is_file()
    again = index(src, proc, "skip", use_cache=True)
    assert again.lengths.tolist() == first.lengths.tolist() and again.skipped == first.skipped == {"empty conversation": 1}
    with pytest.raises(DataError, match="empty conversation"):
        index(src, proc, "fail", use_cache=True)
    os.utime(ann, ns=(1, 1))
    assert index_cache.cache_key(open_source(cfg), proc) != key
