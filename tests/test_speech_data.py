"""Spoken answers in the data pipeline (issue 19, point 4): an assistant turn's ``"speech"`` WAV becomes codec codes
at data time, with the span of its answer text; the batch keys; the index cache and shards carry the codes; every
bad kind is one line with file:line through ``vita.check`` and the ``data.on_bad_sample`` policy; the
``python -m vita.data.speak`` command. Real files throughout: flite speech, soundfile-written silence and stereo."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from tests.conftest import ROOT, vita_env
from vita.config import register_resolvers
from vita.data.speak import flite_speech

register_resolvers()
pytestmark = pytest.mark.skipif(__import__("shutil").which("flite") is None, reason="flite missing (make deps)")

CODEC = ("mel_rvq-tiny", None, ())
ANSWERS = ["Hello there.", "The cat sat on the mat.", "Good night."]
LONG = ("This answer is a rather long one, spoken slowly by the speech synthesiser, so that it runs well past the "
        "three seconds of audio the decoder takes.")
SPEAKS = ["model.speech.codec=mel_rvq-tiny", "model.speech.decoder=nar_ar-tiny", "model.speech.max_seconds=3"]


def _q(text: str = "Say something.") -> dict:
    return {"from": "human", "value": text}


def _a(text: str, speech: str | None = None) -> dict:
    return {"from": "gpt", "value": text, **({"speech": speech} if speech else {})}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """An audio root with flite answers, silence, stereo, a non-WAV and a too-long answer; a JSONL with good samples
    then one of each bad kind (the kind expected per line)."""
    root = tmp_path_factory.mktemp("spoken")
    audio = root / "audio"
    (audio / "answers").mkdir(parents=True)
    for k, text in enumerate(ANSWERS + [LONG]):
        wave, rate = flite_speech(text)
        sf.write(audio / "answers" / f"{k}.wav", wave, rate)
    wave, rate = sf.read(audio / "answers" / "0.wav", dtype="float32")
    sf.write(audio / "silence.wav", np.zeros(rate, dtype=np.float32), rate)
    sf.write(audio / "stereo.wav", np.stack([wave, wave], axis=1), rate)
    (audio / "notawav.wav").write_text("this is text, not audio\n")
    good = [
        {"id": "g0", "conversations": [_q(), _a(ANSWERS[0], "answers/0.wav")]},
        {"id": "g1", "conversations": [_q(), _a(ANSWERS[1], "answers/1.wav"), _q("More."), _a(ANSWERS[2], "answers/2.wav")]},
        {"id": "g2", "conversations": [_q(), _a("No speech here.")]},
    ]
    bad = [
        ({"id": "missing", "conversations": [_q(), _a(ANSWERS[0], "answers/nope.wav")]}, "missing speech answer"),
        ({"id": "unreadable", "conversations": [_q(), _a(ANSWERS[0], "notawav.wav")]}, "unreadable speech answer"),
        ({"id": "silent", "conversations": [_q(), _a(ANSWERS[0], "silence.wav")]}, "silent speech answer"),
        ({"id": "stereo", "conversations": [_q(), _a(ANSWERS[0], "stereo.wav")]}, "speech answer not mono"),
        ({"id": "long", "conversations": [_q(), _a(LONG, "answers/3.wav")]}, "speech answer too long"),
        ({"id": "notext", "conversations": [_q(), _a("  ", "answers/0.wav")]}, "speech answer without text"),
        ({"id": "cut", "conversations": [_q(), _a("Fine."), _q("word " * 300), _a(ANSWERS[0], "answers/0.wav")]},
         "spoken answer cut by truncation"),
        ({"id": "user", "conversations": [{**_q(), "speech": "answers/0.wav"}, _a(ANSWERS[0])]}, "speech on a user turn"),
        ({"id": "escape", "conversations": [_q(), _a(ANSWERS[0], "../audio/../../x.wav")]}, "path escapes root"),
    ]
    (root / "good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good))
    (root / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r, _ in bad))
    expected = {f"{root / 'bad.jsonl'}:{k + 1}": (r["id"], kind) for k, (r, kind) in enumerate(bad)}
    return {"root": root, "audio": audio, "expected": expected}


def _overrides(c: dict, speaks: bool = True, bad: bool = False) -> list[str]:
    ds = ",".join(f"{{name:{n},annotations:['{c['root'] / n}.jsonl'],audio_root:'{c['audio']}'}}"
                  for n in (("good", "bad") if bad else ("good",)))
    ds = f"[{ds}]"
    return ["experiment=chatterbot_tiny", "data.format=vita", f"data.datasets={ds}", "data.max_length=256",
            "data.template=chatml", "data.num_workers=0", "engine.micro_batch_size=1", *(SPEAKS if speaks else [])]


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from vita.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    OmegaConf.resolve(cfg)
    return cfg


def _spec(cfg):
    from vita.check import tokenizer_and_spec

    return tokenizer_and_spec(cfg, open("/dev/null", "w"))


def test_items_codes_spans_and_collate(corpus, tmp_path, monkeypatch):
    """Each spoken answer's codes are the codec's codes of its WAV; its span is exactly the answer's text tokens
    (the end-of-turn token left out); the collator pads codes and moves spans with their sample when packing; a
    micro-batch without a spoken answer has no speech keys."""
    from vita.data import build_data
    from vita.data.collate import Collator
    from vita.model.speech.codecs import codec_from_spec

    monkeypatch.setenv("VITA_INDEX_CACHE", str(tmp_path / "cache"))
    cfg = _compose(_overrides(corpus))
    tok, spec = _spec(cfg)
    assert spec.speech_codec == CODEC and spec.speech_max_frames == 750
    bundle = build_data(cfg, tok, 0, 1, spec=spec)
    items = {it["id"]: it for it in (bundle.dataset[i] for i in range(len(bundle.dataset)))}
    assert set(items) == {"g0", "g1", "g2"}
    codec = codec_from_spec(CODEC)
    for sid, files, texts in (("g0", [0], ANSWERS[:1]), ("g1", [1, 2], ANSWERS[1:3])):
        it = items[sid]
        assert len(it["speech_codes"]) == len(files) == len(it["speech_spans"])
        for k, (codes, (a, b), text) in enumerate(zip(it["speech_codes"], it["speech_spans"], texts)):
            wave, rate = sf.read(corpus["audio"] / "answers" / f"{files[k]}.wav", dtype="float32")
            assert torch.equal(codes, codec.encode(torch.from_numpy(wave), rate))
            assert abs(codes.shape[0] - len(wave) / rate * codec.frame_rate) <= 1
            assert tok.decode(it["input_ids"][a:b]) == text
            assert it["input_ids"][b] == tok.convert_tokens_to_ids("<|im_end|>")
            assert all(lab != -100 for lab in it["labels"][a:b + 1])
    assert "speech_codes" not in items["g2"] and "speech_spans" not in items["g2"]
    order = [items["g2"], items["g0"], items["g1"]]
    for packing in (False, True):
        b = Collator(tok.pad_token_id, packing, 256 * 2)(order)
        lens = [len(it["input_ids"]) for it in order]
        codes = items["g0"]["speech_codes"] + items["g1"]["speech_codes"]
        assert b["speech_codes"].shape == (3, max(c.shape[0] for c in codes), codes[0].shape[1])
        assert b["speech_code_lengths"].tolist() == [c.shape[0] for c in codes]
        for j, c in enumerate(codes):
            assert torch.equal(b["speech_codes"][j, :c.shape[0]], c) and not b["speech_codes"][j, c.shape[0]:].any()
        spans = items["g0"]["speech_spans"] + items["g1"]["speech_spans"]
        for (row, a, e), (a0, e0), text in zip(b["speech_spans"].tolist(), spans, ANSWERS):
            assert e - a == e0 - a0 and tok.decode(b["input_ids"][row, a:e].tolist()) == text
        if packing:  # g2, g0 and g1 share one row: the spans are shifted by the samples before them
            assert b["input_ids"].shape[0] == 1 and b["speech_spans"][0].tolist() == [0, lens[0] + spans[0][0],
                                                                                      lens[0] + spans[0][1]]
        else:
            assert b["speech_spans"][:, 0].tolist() == [1, 2, 2]
    text_only = Collator(tok.pad_token_id)([items["g2"]])
    assert not {"speech_codes", "speech_code_lengths", "speech_spans"} & set(text_only)


def test_index_cache_keeps_codes(corpus, tmp_path, monkeypatch):
    """The index holds the codes (computed once, while indexing); the cache returns them, and another codec spec is
    another cache entry."""
    from vita.data import index_cache, make_processor, open_source
    from vita.data.dataset import index

    monkeypatch.setenv("VITA_INDEX_CACHE", str(tmp_path / "cache"))
    cfg = _compose(_overrides(corpus))
    tok, spec = _spec(cfg)
    source = open_source(cfg.data)
    proc = make_processor(cfg.data, tok, spec)
    first = index(source, proc, use_cache=True)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    hit = index_cache.load(index_cache.cache_key(source, proc))
    assert hit is not None and set(hit[5]) == set(first.speech) and len(first.speech) == 2
    for pos, codes in first.speech.items():
        assert all(np.array_equal(a, b) for a, b in zip(codes, hit[5][pos]))
    other = make_processor(cfg.data, tok, replace(spec, speech_codec=("mel_rvq-tiny", None, (("codebook_size", 8),))))
    assert index_cache.cache_key(source, other) != index_cache.cache_key(source, proc)
    from vita.model.speech.mel_rvq import TINY, MelRVQCodec, make_config

    folder = MelRVQCodec(make_config(TINY)).save(tmp_path / "codec")  # a codec folder refitted in place: a new key
    in_folder = make_processor(cfg.data, tok, replace(spec, speech_codec=("mel_rvq", str(folder), ())))
    before = index_cache.cache_key(source, in_folder)
    MelRVQCodec(make_config({**TINY, "seed": 1})).save(folder)
    assert index_cache.cache_key(source, in_folder) != before


def test_check_names_every_bad_kind(corpus):
    """python -m vita.check: one line per bad spoken answer with file:line, the sample and its kind; exit 1."""
    out = subprocess.run([sys.executable, "-m", "vita.check", "--workers=1", *_overrides(corpus, bad=True)], cwd=ROOT,
                         env=vita_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    for where, (sid, kind) in corpus["expected"].items():
        hits = [ln for ln in lines if f"{where} sample '{sid}': {kind}:" in ln]
        assert len(hits) == 1, (where, kind, out.stdout[-3000:])
    assert f"FAIL: {3 + len(corpus['expected'])} samples, {len(corpus['expected'])} with problems" in out.stdout


def test_policy_fail_and_skip(corpus, tmp_path, monkeypatch):
    """At train time ``data.on_bad_sample=fail`` stops at the first bad spoken answer with its file:line;
    ``skip`` keeps the good samples and counts each kind."""
    from vita.data import build_data
    from vita.errors import DataError

    monkeypatch.setenv("VITA_INDEX_CACHE", str(tmp_path / "cache"))
    cfg = _compose(_overrides(corpus, bad=True))
    tok, spec = _spec(cfg)
    with pytest.raises(DataError) as e:
        build_data(cfg, tok, 0, 1, spec=spec)
    msg = str(e.value)
    assert "\n" not in msg and msg.split(" sample ")[0] in corpus["expected"]
    cfg.data.on_bad_sample = "skip"
    bundle = build_data(cfg, tok, 0, 1, spec=spec)
    assert len(bundle.dataset) == 3
    counts = bundle.skip_counts()
    for _, kind in corpus["expected"].values():
        key = "skipped/" + "".join(ch if ch.isalnum() else "_" for ch in kind)
        assert counts.get(key) == 1, (kind, counts)


def test_speech_to_a_model_that_does_not_speak(corpus, tmp_path, monkeypatch):
    """A spoken answer given to a model without a speech decoder is a bad sample (check and train time), never
    silently ignored; the text sample is fine."""
    from vita.check import run_check
    from vita.data import build_data
    from vita.errors import DataError

    monkeypatch.setenv("VITA_INDEX_CACHE", str(tmp_path / "cache"))
    cfg = _compose(_overrides(corpus, speaks=False))
    import io

    out = io.StringIO()
    assert run_check(cfg, workers=1, out=out) == 2
    assert out.getvalue().count("speech answer without speech decoder: turn 1 has speech") == 2
    tok, spec = _spec(cfg)
    assert spec is None
    with pytest.raises(DataError, match=r"good\.jsonl:[12] sample 'g[01]': speech answer without speech decoder"):
        build_data(cfg, tok, 0, 1, spec=spec)


def test_shards_carry_codes(corpus, tmp_path, monkeypatch):
    """Shards store each spoken answer's codes and the stream reads them back; shards written by a model that does
    not speak are refused by a speaking one with one line."""
    from vita.data import build_data, make_processor
    from vita.data.shards.reader import iter_samples
    from vita.data.shards.stream import decode
    from vita.data.shards.writer import write_shards
    from vita.errors import DataError

    monkeypatch.setenv("VITA_INDEX_CACHE", str(tmp_path / "cache"))
    cfg = _compose(_overrides(corpus))
    tok, spec = _spec(cfg)
    ref = build_data(cfg, tok, 0, 1, spec=spec)
    want = {ref.dataset[i]["id"]: ref.dataset[i] for i in range(len(ref.dataset))}
    man = write_shards(cfg, tmp_path / "sp", progress=False)
    assert man["samples"] == 3
    proc = make_processor(cfg.data, tok, spec)
    got = {}
    for raw in iter_samples(str(tmp_path / "sp" / man["shards"][0]["name"]), 10):
        it = decode(proc, "shard", raw)
        got[it["id"]] = it
    for sid, it in want.items():
        assert [c.tolist() for c in got[sid].get("speech_codes", [])] == [c.tolist() for c in it.get("speech_codes", [])]
        assert got[sid].get("speech_spans") == it.get("speech_spans")
    mute = _compose(_overrides(corpus, speaks=False))
    mute.data.on_bad_sample = "skip"
    write_shards(mute, tmp_path / "mute", progress=False)
    from vita.config import ShardSetConfig

    cfg.data.format, cfg.data.shards = "shards", [ShardSetConfig(name="mute", url=str(tmp_path / "mute"))]
    with pytest.raises(DataError, match="written without speech codes .* re-shard with the speaking model"):
        build_data(cfg, tok, 0, 1, spec=spec)


def test_speak_command(tmp_path, capsys, monkeypatch):
    """python -m vita.data.speak speaks the answers without speech into DIR/answers and writes the annotations with
    relative "speech" fields that the data pipeline reads; bad JSON and a missing flite are one line each."""
    from vita.data.speak import main
    from vita.data.speech import load_speech

    ann = tmp_path / "qa.jsonl"
    ann.write_text(json.dumps({"id": "q/1", "conversations": [_q(), _a(ANSWERS[0]), _q(), _a(ANSWERS[1])]}) + "\n"
                   + json.dumps({"id": "q2", "conversations": [_q(), _a(ANSWERS[2], "kept.wav")]}) + "\n")
    assert main([str(ann), "--out", str(tmp_path / "out"), "--voice", "rms", "--no-progress"]) == 0
    recs = [json.loads(line) for line in (tmp_path / "out" / "qa.jsonl").read_text().splitlines()]
    paths = [t["speech"] for t in recs[0]["conversations"] if "speech" in t]
    assert len(paths) == 2 and all(not Path(p).is_absolute() for p in paths)
    assert recs[1]["conversations"][1]["speech"] == "kept.wav"
    for p in paths:
        wave, rate = load_speech(tmp_path / "out" / p)
        assert rate == 16000 and len(wave) > rate // 2
    assert main([str(ann), "--out", str(tmp_path / "all"), "--overwrite", "--no-progress"]) == 0
    assert "kept.wav" not in (tmp_path / "all" / "qa.jsonl").read_text()
    capsys.readouterr()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "conversations": [_q(), _a("Hi.")]}) + "\n{not json\n")
    assert main([str(bad), "--out", str(tmp_path / "b"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{bad}:2" in err[0] and "malformed JSON line" in err[0]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main([str(ann), "--out", str(tmp_path / "c"), "--no-progress"]) == 2
    assert "apt-get install -y flite" in capsys.readouterr().err


def test_demo_spoken_answers(tmp_path, monkeypatch):
    """The demo's spoken-answer set: data=demo_spoken_answers gives 40 train answers (12 held out) whose codes come
    from the codec fitted on them (4 x 256 at 62.5 Hz) and whose spans are the answers' text."""
    from tests.data_fixtures import demo_root
    from vita.data import build_data
    from vita.data.speak import sentences
    from vita.model.speech.codecs import codec_from_spec

    monkeypatch.setenv("VITA_INDEX_CACHE", str(tmp_path / "cache"))
    root = demo_root()
    codec_dir = root / "spoken_answers" / "codec"
    cfg = _compose(["experiment=chatterbot_tiny", "data=demo_spoken_answers", "engine.micro_batch_size=1",
                    "data.num_workers=0", "model.speech.codec=mel_rvq", f"model.speech.codec_path={codec_dir}",
                    "model.speech.decoder=nar_ar-tiny"])
    assert cfg.data.datasets[0].audio_root == str(root / "spoken_answers")
    tok, spec = _spec(cfg)
    codec = codec_from_spec(spec.speech_codec)
    assert (codec.codebooks, codec.codebook_size, codec.frame_rate) == (4, 256, 62.5)
    bundle = build_data(cfg, tok, 0, 1, spec=spec)
    assert len(bundle.dataset) == len(sentences("train")) == 40
    texts = set(sentences("train"))
    for i in range(0, 40, 9):
        it = bundle.dataset[i]
        (codes,), ((a, b),) = it["speech_codes"], it["speech_spans"]
        assert codes.shape[1] == 4 and 0 <= int(codes.min()) and int(codes.max()) < 256 and codes.shape[0] > 50
        assert tok.decode(it["input_ids"][a:b]).strip() in texts
    held = [json.loads(line) for line in Path(cfg.data.eval.spoken_heldout.annotations[0]).read_text().splitlines()]
    assert [r["conversations"][1]["value"] for r in held] == sentences("heldout")
    assert all((root / "spoken_answers" / r["conversations"][1]["speech"]).is_file() for r in held)
