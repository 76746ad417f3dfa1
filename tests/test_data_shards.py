"""Sharded, streamed data (vita/data/shards/): the writer, the stream's order and resume, HTTP, bad shards,
stale manifests, vita.check, and training on shards against the JSON path."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import PY, ROOT, _free_port, find_run, losses, quiet, run_vita, vita_env
from tests.data_fixtures import demo_root
from vita.data.loader import Position
from vita.errors import DataError

TEXT = ["experiment=chatterbot_tiny", "data=demo", *(f"data.datasets.{i}.ratio=0" for i in range(4))]  # demo text only
"""The demo's 150 text samples (its media datasets weighted 0) for a tiny text model: fast to shard and train."""


def _compose(overrides):
    from vita.bench.harness import compose

    return compose(list(overrides))


def _write(out: Path, overrides, **kw) -> dict:
    from vita.data.shards.writer import write_shards

    return write_shards(_compose(overrides), out, args=list(overrides), progress=False, **kw)


def _bundle(overrides, rank: int = 0, world: int = 1):
    from vita.data import build_data
    from vita.model.tokens import load_tokenizer

    cfg = _compose(overrides)
    return build_data(cfg, load_tokenizer(cfg.model), rank, world)


def _shard_args(url, *extra) -> list[str]:
    return [*TEXT, "data.format=shards", "data.sampler=random", f"data.shards=[{{name:text,url:'{url}'}}]", *extra]


@pytest.fixture(scope="module")
def text_shards(tmp_path_factory) -> Path:
    """The demo text samples in 15 shards of 10."""
    demo_root()
    out = tmp_path_factory.mktemp("shards") / "text"
    _write(out, TEXT, samples_per_shard=10)
    return out


@pytest.fixture(scope="module")
def demo_shards(tmp_path_factory) -> Path:
    """The whole demo (images, video, audio, text) sharded for tiny_omni, one shard."""
    demo_root()
    out = tmp_path_factory.mktemp("shards") / "demo"
    _write(out, ["model=tiny_omni", "data=demo"])
    return out


VIDEO = ["model=tiny_omni", "data=demo", "data.sampler=sequential", "data.datasets.2.ratio=1",
         *(f"data.datasets.{i}.ratio=0" for i in (0, 1, 3, 4))]
"""The demo's 3 videos, once each, for tiny_omni (56-px frames)."""


@pytest.fixture(scope="module")
def frame_shards(tmp_path_factory) -> Path:
    """The demo videos sharded with their sampled frames stored as PNG (``--video-frames png``)."""
    demo_root()
    out = tmp_path_factory.mktemp("shards") / "frames"
    _write(out, VIDEO, video_frames="png")
    return out


def _ids(loader, start: Position, steps: int) -> list[list[str]]:
    out = []
    for _pos, mbs in loader.iterate(start):
        out.append([i for mb in mbs for i in mb["ids"]])
        if len(out) == steps:
            return out
    return out


# -- writer ------------------------------------------------------------------------------------------------
def test_writer_manifest_counts_and_no_per_sample_lengths(text_shards):
    man = json.loads((text_shards / "manifest.json").read_text())
    assert man["samples"] == 150 and len(man["shards"]) == 15
    assert sum(sh["samples"] for sh in man["shards"]) == 150
    assert man["modalities"] == {"text": 150}
    sizes = [(text_shards / sh["name"]).stat().st_size for sh in man["shards"]]
    assert sizes == [sh["bytes"] for sh in man["shards"]]
    assert man["fingerprint"]["max_length"] == 512 and man["fingerprint"]["template"] == "qwen2.5"
    # start-up cost must not grow with the data: no list in the manifest as long as the sample count
    flat = json.dumps(man)
    assert len(flat) < 200 * len(man["shards"]) + 4000, len(flat)


def test_writer_resumes_after_a_stop_with_identical_shards(tmp_path, monkeypatch):
    demo_root()
    straight = tmp_path / "straight"
    _write(straight, TEXT, samples_per_shard=40)
    from vita.data.shards import writer

    calls = {"n": 0}
    real = writer._atomic_json

    def stop_after_two(path, obj):
        real(path, obj)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # stopped after two finished shards, the third half written

    stopped = tmp_path / "stopped"
    monkeypatch.setattr(writer, "_atomic_json", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        _write(stopped, TEXT, samples_per_shard=40)
    monkeypatch.setattr(writer, "_atomic_json", real)
    assert not (stopped / "manifest.json").exists() and (stopped / ".shard-progress.json").exists()
    man = _write(stopped, TEXT, samples_per_shard=40)
    assert man["timing"]["samples_written"] == 150 - 80  # continued after the two finished shards
    a, b = json.loads((straight / "manifest.json").read_text()), man
    assert a["shards"] == b["shards"]
    for sh in a["shards"]:
        assert (straight / sh["name"]).read_bytes() == (stopped / sh["name"]).read_bytes(), sh["name"]
    assert not list(stopped.glob(".*.tmp"))


def test_bad_samples_are_left_out_listed_and_reported_by_check(tmp_path):
    """demo_bad: what vita.check finds on the JSON files is what sharding leaves out and lists."""
    from vita.check import run_check

    demo_root()
    args = ["model=tiny_qwen2", "data=demo_bad"]
    out = tmp_path / "bad"
    import io

    json_report = io.StringIO()
    n_json = run_check(_compose(args), workers=1, out=json_report)
    man = _write(out, args)
    rows = [json.loads(line) for line in (out / "bad_samples.jsonl").read_text().splitlines()]
    assert man["bad_samples"] == len(rows) > 0
    assert all(r["message"] and r["where"] for r in rows)
    kinds = Counter(r["kind"] for r in rows)
    for kind in kinds:  # every kind listed at sharding is a problem vita.check reports on the JSON files
        assert repr(kind) in json_report.getvalue(), kind
    shard_report = io.StringIO()
    n_shards = run_check(_compose([*args, "data.format=shards", f"data.shards=[{{name:bad,url:'{out}'}}]"]),
                         workers=1, out=shard_report)
    assert n_shards == len(rows) and n_json >= 1
    assert "spec: matches this config" in shard_report.getvalue()
    assert rows[0]["message"] in shard_report.getvalue()


def test_stored_frames_leave_out_an_undecodable_video_and_resume_identically(tmp_path, monkeypatch):
    """demo_bad with --video-frames: writing decodes every video, so one whose header reads but whose frames do not
    decode (a bad sample the header-only index cannot see) is left out and listed; a writer stopped right after
    the shard that holds it between two kept samples continues to the same shards and the same list."""
    demo_root()
    args = ["model=tiny_qwen2", "data=demo_bad"]
    plain = _write(tmp_path / "plain", args, samples_per_shard=3)
    straight = _write(tmp_path / "straight", args, samples_per_shard=3, video_frames="png")
    rows = (tmp_path / "straight" / "bad_samples.jsonl").read_text().splitlines()
    late = [json.loads(r) for r in rows if r not in (tmp_path / "plain" / "bad_samples.jsonl").read_text()]
    assert [(r["kind"], r["id"]) for r in late] == [("no decodable frame", "no-decodable-frame")]
    assert straight["bad_samples"] == len(rows) == plain["bad_samples"] + 1
    assert straight["samples"] == plain["samples"] - 1 and straight["video_frames"] == "png"
    firsts = [(sh["first"], sh["samples"]) for sh in straight["shards"]]
    assert firsts[2:4] == [(6, 3), (10, 2)], firsts  # shard 2 holds mixture samples 6, 7, 9: 8 is the undecodable one
    from vita.data.shards import writer

    calls, real = {"n": 0}, writer._atomic_json

    def stop_after_three(path, obj):
        real(path, obj)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(writer, "_atomic_json", stop_after_three)
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path / "stopped", args, samples_per_shard=3, video_frames="png")
    monkeypatch.setattr(writer, "_atomic_json", real)
    man = _write(tmp_path / "stopped", args, samples_per_shard=3, video_frames="png")
    assert man["shards"] == straight["shards"] and man["bad_samples"] == straight["bad_samples"]
    assert (tmp_path / "stopped" / "bad_samples.jsonl").read_text().splitlines() == rows
    for sh in man["shards"]:
        assert (tmp_path / "stopped" / sh["name"]).read_bytes() == (tmp_path / "straight" / sh["name"]).read_bytes()


def test_webdataset_reads_a_vita_shard(text_shards):
    wds = pytest.importorskip("webdataset")
    samples = list(wds.WebDataset(str(text_shards / "shard-000000.tar"), shardshuffle=False))
    assert len(samples) == 10
    meta = json.loads(samples[0]["json"])
    assert meta["record"]["conversations"] and meta["length"] > 0 and meta["modality"] == "lang"


def test_size_and_brace_patterns():
    from vita.data.shards.format import expand_braces
    from vita.data.shards.writer import parse_size

    assert parse_size("1GB") == 10**9 and parse_size("200MB") == 2 * 10**8 and parse_size("512KiB") == 512 * 1024
    with pytest.raises(DataError, match="shard-size"):
        parse_size("big")
    assert expand_braces("d/s-{000..002}.tar") == ["d/s-000.tar", "d/s-001.tar", "d/s-002.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]


# -- the stream --------------------------------------------------------------------------------------------
def test_json_and_shards_give_the_same_micro_batches_with_media(demo_shards):
    """The demo (images, video, audio, text) sharded and read in stream order: every tensor equals the JSON path's."""
    from tests.data_fixtures import omni_demo

    out = demo_shards
    common = ["data.sampler=sequential", "engine.micro_batch_size=8"]
    _, _, _, js = omni_demo(common)
    _, _, _, sh = omni_demo([*common, "data.format=shards", f"data.shards=[{{name:demo,url:'{out}'}}]"])
    assert sh.sampler.steps_per_epoch == js.sampler.steps_per_epoch
    kinds, ids = set(), []
    for (pa, a), (pb, b) in zip(js.loader.iterate(Position()), sh.loader.iterate(Position())):
        assert pa == pb
        for x, y in zip(a, b):
            assert x["ids"] == y["ids"]
            ids += x["ids"]
            assert x.keys() == y.keys()
            kinds |= set(x) & {"pixel_values", "audio_features"}
            for k, v in x.items():
                if isinstance(v, torch.Tensor):
                    assert torch.equal(v, y[k]), (pa, k)
        if pa.step == 8:
            break
    assert kinds == {"pixel_values", "audio_features"} and any(i.startswith("video") for i in ids), ids


def test_stored_frames_equal_the_decoders_pixel_for_pixel_and_the_loader_never_decodes(frame_shards, monkeypatch):
    """Shards written with ``--video-frames png``: each stored frame equals the decoder path's frame after the same
    resize (uint8, exactly), and the loader's item (decoder patched to fail) equals the JSON path's, tensor for tensor."""
    from vita.check import tokenizer_and_spec
    from vita.data import make_processor, media, open_source
    from vita.data.shards.reader import Member, iter_samples
    from vita.data.shards.stream import decode

    man = json.loads((frame_shards / "manifest.json").read_text())
    assert man["video_frames"] == "png" and man["samples"] == 3 and man["bad_samples"] == 0
    cfg = _compose(VIDEO)
    tok, spec = tokenizer_and_spec(cfg, model_first=True)
    proc = make_processor(cfg.data, tok, spec)
    source = open_source(cfg.data)
    by_id = {}
    for i in range(len(source)):
        raw, where, roots, _ = source.read(i)
        s = proc.parse(raw, where, roots)
        by_id[s.id] = (s.media["video"][0], proc.load(raw, where, roots))
    url = str(frame_shards / man["shards"][0]["name"])
    stored = list(iter_samples(url, 10))
    assert sorted(r.meta["id"] for r in stored) == sorted(by_id) and len(by_id) == 3
    for r in stored:
        (name, data), = r.media.items()
        assert name.endswith(".video0.frames.png"), name  # the video file itself is not in the shard
        path, _ = by_id[r.meta["id"]]
        want = media.video_frames(path, proc.opts, spec)
        assert want.shape == (16, spec.image_size, spec.image_size, 3)
        assert np.array_equal(media.StoredFrames(Member(data, name), "png").pixels(spec), want), name

    def no_decoding(*a, **k):
        raise AssertionError("the loader decoded a video")

    monkeypatch.setattr(media, "video_frames", no_decoding)
    for r in stored:
        got, (_, want) = decode(proc, url, r), by_id[r.meta["id"]]
        assert "bad" not in got, got.get("bad")
        assert got.keys() == want.keys() and got["pixel_values"].shape[0] == 16
        for k, v in want.items():
            assert torch.equal(v, got[k]) if isinstance(v, torch.Tensor) else v == got[k], k


def test_frame_formats_round_trip():
    """png and npy give the decoder's frames back exactly; jpg (quality 95) within a small mean error."""
    from vita.data.media import FRAME_FORMATS, MediaOptions, StoredFrames, encode_frames, video_frames
    from vita.data.shards.reader import Member
    from vita.data.spec import DataSpec, preset

    spec = preset("tiny")
    frames = video_frames(Path(demo_root()) / "video" / "Megamind.avi", MediaOptions(max_frames=6), spec)
    assert frames.shape == (6, 28, 28, 3) and frames.dtype == np.uint8 and frames.std() > 10
    for kind in FRAME_FORMATS:
        got = StoredFrames(Member(encode_frames(frames, kind), f"x.{kind}"), kind).pixels(spec)
        assert got.shape == frames.shape
        err = np.abs(got.astype(int) - frames).mean()
        assert err == 0 if kind != "jpg" else 0 < err < 4, (kind, err)
    with pytest.raises(DataError, match=r"x\.png: unreadable stored frames: uint8 \[168, 28, 3\] is not a stack of 56-px"):
        StoredFrames(Member(encode_frames(frames, "png"), "x.png"), "png").pixels(DataSpec(image_size=56))


def test_epoch_covers_every_sample_once_across_ranks_and_resume_replays_exactly(text_shards):
    """2 ranks, buffer 8: an epoch's ids are distinct and all but the announced drop; starting at any step
    (mid-block, across the epoch end) gives exactly the uninterrupted stream's batches."""
    args = _shard_args(text_shards, "data.shuffle_buffer=8", "engine.micro_batch_size=3", "engine.grad_accum=2")
    ranks = [_bundle(args, r, 2) for r in range(2)]
    plan = ranks[0].sampler
    steps = plan.steps_per_epoch
    assert plan.stream_samples == 70 and steps == (70 // 3) // 2 and plan.dropped == 150 - steps * 12  # 7 of 15 shards
    full = [_ids(b.loader, Position(), steps + 3) for b in ranks]
    epoch0 = [i for r in full for step in r[:steps] for i in step]
    assert len(epoch0) == len(set(epoch0)) == steps * 12
    assert full[0][steps] != full[0][0]  # the next epoch is dealt and shuffled anew
    for r, b in enumerate(ranks):
        for k in (1, steps - 1, steps + 1):
            assert _ids(b.loader, Position(k // steps, k % steps), len(full[r]) - k) == full[r][k:], (r, k)


def test_starting_the_stream_leaves_the_global_rng_alone(text_shards):
    """As the JSON loader's: starting at a resume position draws nothing from torch's RNG (restored just before)."""
    loader = _bundle(_shard_args(text_shards, "engine.micro_batch_size=3")).loader
    before = torch.get_rng_state()
    next(iter(loader.iterate(Position(0, 2))))
    assert torch.equal(torch.get_rng_state(), before)


def test_shard_sets_mix_with_ratios_and_brace_selection(text_shards):
    """Two sets: all 15 shards (ratio 1) and shards 0-4 by pattern at ratio 2: an epoch holds shards 0-4's samples
    three times, the others once, in one interleaved, shuffled stream."""
    from vita.data.shards.reader import iter_samples

    sets = (f"data.shards=[{{name:all,url:'{text_shards}'}},"
            f"{{name:head,url:'{text_shards}/shard-{{000000..000004}}.tar',ratio:2.0}}]")
    b = _bundle([*TEXT, "data.format=shards", "data.sampler=random", sets, "data.shuffle_buffer=16",
                 "engine.micro_batch_size=5"])
    assert b.sampler.samples_per_epoch == 250 and b.sampler.dropped == 0
    got = _ids(b.loader, Position(), b.sampler.steps_per_epoch)
    head = [r.meta["id"] for i in range(5) for r in iter_samples(str(text_shards / f"shard-{i:06d}.tar"), 5)]
    rest = [r.meta["id"] for i in range(5, 15) for r in iter_samples(str(text_shards / f"shard-{i:06d}.tar"), 5)]
    assert Counter(i for step in got for i in step) == Counter(head * 3 + rest)
    first = [i for step in got[:4] for i in step]  # the first buffer: both sets, in proportion (150 : 100)
    assert 2 <= sum(i in set(head) for i in first) <= 18


def test_packing_on_the_stream(text_shards):
    """data.packing packs each streamed micro-batch into rows of max_length, the same samples as unpacked."""
    plain = _bundle(_shard_args(text_shards, "engine.micro_batch_size=8"))
    packed = _bundle(_shard_args(text_shards, "engine.micro_batch_size=8", "data.packing=true"))
    for (_, a), (_, b) in zip(plain.loader.iterate(Position()), packed.loader.iterate(Position(0, 0))):
        assert sorted(a[0]["ids"]) == sorted(b[0]["ids"]) and "position_ids" in b[0]
        assert b[0]["input_ids"].shape[0] < a[0]["input_ids"].shape[0]  # several samples per row
        assert int(b[0]["attention_mask"].sum()) == int(a[0]["attention_mask"].sum())
        break


def test_data_workers_keep_the_order_and_resume(text_shards):
    """With 2 data workers the rank's batches come back in the plan's order whatever worker is faster."""
    from vita.data.shards.stream import micro_batches

    args = _shard_args(text_shards, "data.shuffle_buffer=4", "engine.micro_batch_size=2", "data.num_workers=2")
    b = _bundle(args)
    plan, steps = b.sampler, b.sampler.steps_per_epoch
    got = _ids(b.loader, Position(), steps)
    streams = [list(micro_batches(plan, b.loader.proc, b.loader.collate, w, 0, 0, plan.micro_per_stream, 5))
               for w in range(2)]
    want = [streams[i % 2][i // 2]["ids"] for i in range(steps)]
    assert got == want
    assert _ids(b.loader, Position(0, 3), steps - 3) == got[3:]


def test_modality_grouping_within_the_buffer_and_its_replay(demo_shards):
    """modality_length_grouped on shards: whole micro-batches of one modality (image/video vs the rest) far more
    often than the plain buffer order gives, and a resume mid-block replays the same grouped order."""
    from tests.data_fixtures import omni_demo
    from vita.data.shards.reader import iter_samples

    stored = list(iter_samples(str(demo_shards / "shard-000000.tar"), 5))
    multimodal = {r.meta["id"]: r.meta["multimodal"] for r in stored}  # a record repeated by a ratio: one id
    assert 0 < sum(multimodal.values()) < len(multimodal)
    mixed = {}
    for sampler in ("modality_length_grouped", "random"):
        _, _, _, b = omni_demo([f"data.sampler={sampler}", "engine.micro_batch_size=4", "data.format=shards",
                                f"data.shards=[{{name:demo,url:'{demo_shards}'}}]", "data.shuffle_buffer=64"])
        steps = b.sampler.steps_per_epoch
        got = _ids(b.loader, Position(), steps)
        mixed[sampler] = sum(len({multimodal[i] for i in step}) > 1 for step in got)
        assert steps * 4 == len(stored)  # one shard, one stream: nothing dropped
        assert Counter(i for step in got for i in step) == Counter(r.meta["id"] for r in stored)  # the epoch's multiset
        if sampler != "random":
            assert _ids(b.loader, Position(0, 17), 5) == got[17:22]  # block 1 starts at sample 64, mid-step 16
    assert mixed["modality_length_grouped"] <= 3 < mixed["random"], mixed


def test_resume_state_refuses_another_stream_and_warns_on_other_workers(text_shards, caplog):
    from vita.errors import CheckpointError

    plan = _bundle(_shard_args(text_shards)).sampler
    saved = plan.state_dict()
    plan.load_state_dict(saved)  # the same settings: silent
    with pytest.raises(CheckpointError, match="shuffle_buffer: saved 7"):
        plan.load_state_dict({**saved, "shuffle_buffer": 7})
    with caplog.at_level(logging.WARNING):
        plan.load_state_dict({**saved, "workers": 2})
    assert "saved with 1 rank(s) x 2 data worker(s) on 1 x 1" in caplog.text
    assert "differ from an uninterrupted run's" in caplog.text


def test_stale_manifest_is_refused_with_the_fields_and_the_command(text_shards):
    with pytest.raises(DataError) as e:
        _bundle(_shard_args(text_shards, "data.max_length=300", "data.state_tokens=false"))
    msg = str(e.value)
    assert "\n" not in msg and "stale" in msg
    assert "max_length 512 -> 300" in msg and "state_tokens True -> False" in msg
    assert "python -m vita.data.shard" in msg and "data.max_length=300" in msg and "data.state_tokens=false" in msg
    assert f"--out {text_shards}" in msg


def test_changed_frame_count_is_refused_for_stored_frames(frame_shards):
    """The frames were sampled for max_frames=16: a run that samples 8 is refused, with the command that re-shards."""
    with pytest.raises(DataError) as e:
        _bundle([*VIDEO, "data.format=shards", f"data.shards=[{{name:video,url:'{frame_shards}'}}]",
                 "data.max_frames=8"])
    msg = str(e.value)
    assert "\n" not in msg and "stale" in msg and "max_frames 16 -> 8" in msg
    assert "data.max_frames=8" in msg and "--video-frames png" in msg and f"--out {frame_shards}" in msg
    import io

    from vita.check import run_check

    report = io.StringIO()  # vita.check says the same, and that the set holds frames
    run_check(_compose([*VIDEO, "data.format=shards", f"data.shards=[{{name:video,url:'{frame_shards}'}}]",
                        "data.max_frames=8"]), workers=1, out=report)
    assert "videos stored as sampled frames (png)" in report.getvalue()
    assert "problem 'stale manifest'" in report.getvalue() and "max_frames 16 -> 8" in report.getvalue()


# -- HTTP --------------------------------------------------------------------------------------------------
@pytest.fixture
def http_dir(tmp_path):
    """A folder served by ``python -m http.server`` on a free port: (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    port = _free_port()
    proc = subprocess.Popen([PY, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    try:
        yield root, f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_training_reads_shards_over_http(text_shards, http_dir, out_root):
    root, base = http_dir
    shutil.copytree(text_shards, root / "text")
    args = [*quiet("http", out_root), *_shard_args(f"{base}/text/shard-{{000000..000014}}.tar"),
            "train.max_steps=4", "engine.micro_batch_size=4", "data.shuffle_buffer=16", "data.shard_timeout=10"]
    run_vita(args)
    run = find_run(out_root, "http")
    assert len(losses(run)) == 4 and all(x == x for x in losses(run))


def _damage(root: Path) -> tuple[str, str]:
    """Delete one shard (a 404) and cut another mid-member: their names."""
    (root / "shard-000003.tar").unlink()
    cut = root / "shard-000007.tar"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2 + 100])
    return "shard-000003.tar", "shard-000007.tar"


def test_http_404_and_truncated_shard_skip_or_fail_never_hang(text_shards, http_dir, caplog):
    root, base = http_dir
    shutil.copytree(text_shards, root / "text")
    gone, cut = _damage(root / "text")
    args = _shard_args(f"{base}/text", "data.shuffle_buffer=1", "data.sampler=sequential", "data.shard_timeout=5",
                       "engine.micro_batch_size=5")
    t0 = time.monotonic()
    skip = _bundle([*args, "data.on_bad_sample=skip"])
    with caplog.at_level(logging.WARNING):
        ids = [i for step in _ids(skip.loader, Position(), skip.sampler.steps_per_epoch) for i in step]
    lost = skip.loader.skipped["unreadable shard"]
    assert 10 < lost < 20 and len(ids) == 150 - lost  # all of the 404 shard, the second half of the cut one
    said = [r.getMessage() for r in caplog.records if "unreadable shard" in r.getMessage()]
    assert len(said) == 2 and any(f"{base}/text/{gone}" in m and "404" in m for m in said)
    assert any(f"{base}/text/{cut}" in m for m in said), said
    fail = _bundle([*args, "data.on_bad_sample=fail"])
    with pytest.raises(DataError, match=f"{base}/text/{gone}: unreadable shard: HTTP 404"):
        _ids(fail.loader, Position(), fail.sampler.steps_per_epoch)
    (root / "text" / gone).write_bytes((text_shards / gone).read_bytes())
    fail = _bundle([*args, "data.on_bad_sample=fail"])
    with pytest.raises(DataError, match=f"{base}/text/{cut}: unreadable shard: .*(cut short|truncated)"):
        _ids(fail.loader, Position(), fail.sampler.steps_per_epoch)
    assert time.monotonic() - t0 < 60


def test_a_missing_manifest_names_the_url(http_dir):
    _, base = http_dir
    with pytest.raises(DataError, match=f"{base}/nothing/manifest.json: HTTP 404"):
        _bundle(_shard_args(f"{base}/nothing"))


# -- training ----------------------------------------------------------------------------------------------
def test_sharded_demo_trains_with_the_json_losses(tmp_path, out_root):
    """tiny_omni on the demo (all modalities, video as stored frames): sharded and read in stream order = the JSON
    path with the sequential sampler, loss for loss (the default random order differs by design: seeded shard order + buffer)."""
    demo_root()
    out = tmp_path / "demo"
    _write(out, ["model=tiny_omni", "data=demo"], video_frames="png")  # video read from stored frames
    common = ["model=tiny_omni", "data.sampler=sequential", "train.max_steps=4", "engine.micro_batch_size=4"]
    run_vita([*quiet("json", out_root), "data=demo", *common])
    run_vita([*quiet("shards", out_root), "data=demo_shards", f"data.shards.0.url={out}", *common])
    a, b = losses(find_run(out_root, "json")), losses(find_run(out_root, "shards"))
    assert len(a) == 4 and a == b


TWO_RANK = ["train.max_steps=12", "train.ckpt_every=3", "engine=zero2", "engine.micro_batch_size=2",
            "data.shuffle_buffer=8", "data.num_workers=1", "optim.warmup_steps=2"]


@pytest.mark.distributed
@pytest.mark.slow
def test_sigkill_and_resume_two_ranks_bit_identical(text_shards, out_root):
    """2 ranks x 1 data worker on shards: SIGKILL at a random step, resume -> the uninterrupted run's weights."""
    import random

    from tests.conftest import load_final
    from tests.reliability.test_kill_resume_dist import _kill_when

    common = [*_shard_args(text_shards), *TWO_RANK]
    straight = out_root / "straight"
    run_vita([*quiet("straight", out_root), f"hydra.run.dir={straight}", *common], world=2)
    run_dir = out_root / "killed"
    args = [*quiet("killed", out_root), f"hydra.run.dir={run_dir}", *common]
    step = random.Random().randint(4, 10)
    seen = _kill_when(args, run_dir, "step", step)
    proc = run_vita(args, world=2)
    assert "resumed from" in proc.stdout + proc.stderr, f"did not resume after the kill at {seen}"
    a, b = load_final(straight), load_final(run_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after the kill at {seen}"
    assert losses(run_dir) == losses(straight)


def test_startup_benchmark_runs_tiny(tmp_path):
    """The benchmark's command on a tiny mixture writes its section (figures measured, never asserted)."""
    p = subprocess.run([PY, "-m", "vita.bench", "shard_startup", "--shard-sizes", "300", "--docs", str(tmp_path)],
                       cwd=ROOT, env=vita_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    row = json.loads((tmp_path / "benchmarks.json").read_text())["shard_startup"]["result"]["rows"][0]
    assert row["samples"] == 300 and row["shards"] == 1
    assert min(row["json_cold_s"], row["json_cached_s"], row["shards_s"], row["write_samples_per_s"]) > 0
    assert "## Data start-up: JSON mixture vs shards" in (tmp_path / "BENCHMARKS.md").read_text()


def test_shard_cli_writes_and_refuses_other_data(tmp_path):
    demo_root()
    out = tmp_path / "cli"
    env = vita_env()
    cmd = [PY, "-m", "vita.data.shard", *TEXT, "--out", str(out), "--samples-per-shard", "100", "--no-progress"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "150 samples in 2 shard(s)" in p.stdout
    p = subprocess.run([*cmd[:-3], "--samples-per-shard", "50", "--no-progress"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "holds shards of other data or settings" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


# -- token budget on shards --------------------------------------------------------------------------------
def _budget_args(url, *extra) -> list[str]:
    return [*TEXT, "data.format=shards", "data.sampler=token_budget", f"data.shards=[{{name:text,url:'{url}'}}]",
            "data.shuffle_buffer=16", *extra]


@pytest.mark.parametrize("packing", [False, True])
def test_token_budget_micro_batches_within_budget_same_count_every_sample_accounted(text_shards, packing):
    """sampler=token_budget on shards, 2 ranks: no micro-batch exceeds the budget (padded: rows x longest;
    packed: token_budget // max_length rows), every stream yields micro_per_stream of them (the manifests' token
    lower bound), they are its blocks' micro-batches in order, and a stream's samples are each emitted once or
    left unread past that count (never lost inside a block)."""
    from vita.data.shards.reader import iter_samples
    from vita.data.shards.stream import budget_blocks, micro_batches

    budget = 1024
    args = _budget_args(text_shards, f"data.token_budget={budget}", "engine.grad_accum=2",
                        *(["data.packing=true"] if packing else []))
    ranks = [_bundle(args, r, 2) for r in range(2)]
    plan = ranks[0].sampler
    assert plan.capacity == budget and plan.micro_per_stream == plan.stream_tokens // budget
    assert plan.steps_per_epoch == plan.micro_per_stream // 2
    seen: list[str] = []
    unread = 0
    for r, b in enumerate(ranks):
        mbs = list(micro_batches(plan, b.loader.proc, b.loader.collate, r, 0, 0, plan.micro_per_stream, 5))
        assert len(mbs) == plan.micro_per_stream
        for mb in mbs:
            assert mb["ids"] and mb["input_ids"].numel() <= budget, mb["input_ids"].shape
            if packing:
                assert mb["input_ids"].shape[0] <= budget // 512 and "position_ids" in mb
        blocks = list(budget_blocks(plan, 0, r, 5))
        groups = [[order[k][1].meta["id"] for k in g] for order, gs in blocks for g in gs]
        assert len(groups) >= plan.micro_per_stream  # the lower bound holds
        assert [sorted(mb["ids"]) for mb in mbs] == [sorted(g) for g in groups[:plan.micro_per_stream]]
        emitted = [i for mb in mbs for i in mb["ids"]]
        rest = [i for g in groups[plan.micro_per_stream:] for i in g]
        length = {x[1].meta["id"]: x[1].meta["length"] for order, _ in blocks for x in order}
        assert mbs[-1]["unread"] == (0, len(rest), sum(length[i] for i in rest))  # what the loader logs
        assert not any("unread" in mb for mb in mbs[:-1])
        stream = [x[1].meta["id"] for order, _ in blocks for x in order]
        assert sorted(emitted + rest) == sorted(stream) and len(set(stream)) == len(stream)
        seen += emitted
        unread += len(rest)
    every = [s.meta["id"] for i in range(15) for s in iter_samples(str(text_shards / f"shard-{i:06d}.tar"), 5)]
    assert len(seen) == len(set(seen)) and len(seen) + unread == len(every) == 150
    assert unread > 0  # these tiny buffers leave some unread (what plan.tokens_dropped announces, in tokens)


def test_token_budget_resume_with_a_data_worker_replays_exactly(text_shards, caplog):
    """1 rank x 2 data workers, token_budget + packing: resuming at any step (mid-block, at and past the epoch
    end) gives the uninterrupted stream's micro-batches, tensor for tensor."""
    args = _budget_args(text_shards, "data.token_budget=1024", "data.packing=true", "data.num_workers=2",
                        "data.shuffle_buffer=8")
    b = _bundle(args)
    steps = b.sampler.steps_per_epoch

    def run(start: Position, n: int) -> list[list[dict]]:
        out = []
        for _pos, mbs in b.loader.iterate(start):
            out.append(mbs)
            if len(out) == n:
                break
        return out

    with caplog.at_level(logging.INFO, logger="vita.data.shards.loader"):
        full = run(Position(), steps + 2)
    said = [r.getMessage() for r in caplog.records if "unread so that every stream ends" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("epoch 0: rank 0's 2 stream(s) left "), said
    assert len(full) == steps + 2 and full[steps][0]["ids"] != full[0][0]["ids"]
    for k in (3, steps - 1, steps + 1):
        got = run(Position(k // steps, k % steps), len(full) - k)
        assert len(got) == len(full) - k
        for x, y in zip(got, full[k:]):
            for a, c in zip(x, y):
                assert a["ids"] == c["ids"] and torch.equal(a["input_ids"], c["input_ids"]), k
                assert torch.equal(a["position_ids"], c["position_ids"]) and torch.equal(a["labels"], c["labels"])


def test_token_budget_refuses_an_overlong_sample_and_a_bad_budget(text_shards, tmp_path):
    """A sample over the budget: refused at start-up from the manifest's longest sample per shard, or (a manifest
    without it) when its block is read, naming the sample; and a budget that cannot work."""
    from vita.errors import ConfigError

    man = json.loads((text_shards / "manifest.json").read_text())
    assert all(0 < sh["longest"] <= sh["tokens"] for sh in man["shards"])
    assert max(sh["longest"] for sh in man["shards"]) > 300  # the demo text has samples over 300 tokens
    with pytest.raises(ConfigError, match=r"shard set 'text': .*shard-\d+\.tar holds a sample of \d+ tokens > "
                                          r"data.token_budget=300.*raise data.token_budget"):
        _bundle(_budget_args(text_shards, "data.token_budget=300"))
    import io

    from vita.check import run_check

    report = io.StringIO()
    over = sum(sh["longest"] > 300 for sh in man["shards"])
    assert run_check(_compose(_budget_args(text_shards, "data.token_budget=300")), workers=1, out=report) == over
    assert report.getvalue().count("problem 'over token budget'") == over
    old = tmp_path / "old"
    shutil.copytree(text_shards, old)
    for sh in man["shards"]:
        del sh["longest"]
    (old / "manifest.json").write_text(json.dumps(man))
    b = _bundle(_budget_args(old, "data.token_budget=300"))
    with pytest.raises(DataError, match=r"shard-\d+\.tar#\d+ .*tokens > data.token_budget=300.*raise data.token_budget"):
        _ids(b.loader, Position(), b.sampler.steps_per_epoch)
    with pytest.raises(ConfigError, match="data.token_budget=500 < data.max_length=512"):
        _bundle(_budget_args(text_shards, "data.token_budget=500", "data.packing=true"))
    with pytest.raises(ConfigError, match="token_budget >= 1"):
        _bundle(_budget_args(text_shards))


def test_training_on_shards_with_token_budget_and_packing(text_shards, out_root):
    """A tiny model trains on shards with sampler=token_budget + packing (the start-up line says the budget)."""
    proc = run_vita([*quiet("budget", out_root), *_budget_args(text_shards, "data.token_budget=1024",
                                                               "data.packing=true"), "train.max_steps=3"])
    assert "micro-batches of at most 1024 tokens" in proc.stdout + proc.stderr
    got = losses(find_run(out_root, "budget"))
    assert len(got) == 3 and all(x == x and x > 0 for x in got)


def test_meta_only_read_seeks_over_media_and_fails_where_a_full_read_does(demo_shards, tmp_path):
    """The replay's read (iter_samples meta_only): the same samples' metadata as a full read, no media bytes, and
    a shard cut inside a media member fails after the same samples."""
    from vita.data.shards.reader import ShardError, iter_samples

    shard = str(demo_shards / "shard-000000.tar")
    full, meta = list(iter_samples(shard, 5)), list(iter_samples(shard, 5, meta_only=True))
    assert [s.meta for s in full] == [s.meta for s in meta] and not any(s.media for s in meta)
    assert sum(len(s.media) for s in full) > 10
    cut = tmp_path / "cut.tar"
    data = Path(shard).read_bytes()
    cut.write_bytes(data[:len(data) // 2])

    def until_error(**kw) -> tuple[list[str], str]:
        got = []
        with pytest.raises(ShardError) as e:
            for s in iter_samples(str(cut), 5, **kw):
                got.append(s.key)
        return got, str(e.value)

    (a, ea), (b, eb) = until_error(), until_error(meta_only=True)
    assert a == b and len(a) > 0 and "cut.tar" in ea and "cut.tar" in eb
