"""Spoken answers (issue 19, points 5 and 6): streamed speech on the inference path, ``vita.chat --speak``, the
REPL's ``/speak``, batch WAVs, ``vita.serve`` audio out, and the ``asr_wer`` / ``asr_cer`` / ``first_chunk_ms``
metrics.

The speaking model is ``model=tiny_qwen2`` (random tiny LLM) with a random speech decoder and the
``mel_rvq-tiny`` codec attached (``tests/speech_helpers.py``): what is checked is the plumbing (spans, chunks,
streaming, files, API shapes), not what the speech says. What a *trained* decoder says (and in-loop / ZeRO-3
evaluation) is checked in tests/test_speech_trained.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import spawn_repl, speak_into
from tests.speech_helpers import b64wav as _b64wav
from tests.speech_helpers import speaking

TINY = ["experiment=chatterbot_tiny", "model=tiny_qwen2"]
QUESTIONS = ["Hello there, how are you?", "What is AI? Tell me more."]


@pytest.fixture(scope="module")
def loaded():
    from vita.infer import load_target

    return speaking(load_target(None, TINY))


def _answers(loaded, questions, n=12):
    from vita.infer import Conversation, GenerationConfig, collate_prompts, conversation_prompt, generate

    items = []
    for q in questions:
        c = Conversation()
        c.add_user(q)
        items.append(conversation_prompt(loaded.processor, c))
    batch = collate_prompts(items, loaded.pad_id)
    return batch, generate(loaded.model, batch, GenerationConfig(max_new_tokens=n), loaded.stop, loaded.pad_id)


@pytest.fixture(scope="module")
def ctc_loaded():
    from vita.infer import load_target

    return speaking(load_target(None, TINY), "ctc-tiny", codebooks=1)


@pytest.mark.parametrize("which", ["nar_ar-tiny", "ctc-tiny"])
def test_streamed_pieces_are_the_whole_decode_and_the_first_comes_early(which, request):
    from vita.infer.speak import speak_rows

    loaded = request.getfixturevalue("loaded" if which == "nar_ar-tiny" else "ctc_loaded")
    batch, _ = _answers(loaded, QUESTIONS[:1], n=1)
    rows = [loaded.tokenizer("The quick brown fox jumps over the lazy dog and runs far away into the woods.",
                             add_special_tokens=False)["input_ids"]]
    spoken = speak_rows(loaded.model, batch, rows, loaded.pad_id, chunk=2)[0]
    pieces = list(spoken)
    codes = torch.cat(spoken.codes)
    codec = loaded.model.speech_codec
    assert len(pieces) > 1
    assert codes.shape[0] == spoken.stats.frames > codec.latency_frames
    assert torch.allclose(torch.cat(pieces), codec.decode(codes), atol=1e-5)
    # the first audio left after the codec's first block, not after the whole answer's codes
    assert spoken.stats.frames_at_first < spoken.stats.frames
    assert spoken.stats.frames_at_first <= codec.latency_frames + 2
    assert spoken.stats.first_chunk_ms is not None and spoken.stats.audio_s == pytest.approx(
        codes.shape[0] / codec.frame_rate, rel=0.02)


def test_each_row_of_a_batch_gets_its_own_speech(loaded):
    """Two answers of different lengths in one left-padded batch: each row's spans, hidden states and codes are
    those it gets alone."""
    from vita.infer import Conversation, collate_prompts, conversation_prompt
    from vita.infer.speak import answer_hidden, speak_rows

    tok = loaded.tokenizer
    answers = [tok("Fine, thank you.", add_special_tokens=False)["input_ids"],
               tok("AI is the study of machines that learn and reason.", add_special_tokens=False)["input_ids"]]
    items = []
    for q in QUESTIONS:
        c = Conversation()
        c.add_user(q)
        items.append(conversation_prompt(loaded.processor, c))
    batch = collate_prompts(items, loaded.pad_id)
    h, e, n = answer_hidden(loaded.model, batch, answers, loaded.pad_id)
    assert n.tolist() == [len(a) for a in answers]
    both = []
    for sp in speak_rows(loaded.model, batch, answers, loaded.pad_id):
        sp.wave()
        both.append(torch.cat(sp.codes))
    for b in range(2):
        one = collate_prompts([items[b]], loaded.pad_id)
        h1, e1, _ = answer_hidden(loaded.model, one, [answers[b]], loaded.pad_id)
        assert torch.allclose(h1[0], h[b, :n[b]], atol=1e-4) and torch.equal(e1[0], e[b, :n[b]])
        assert torch.equal(e1[0], loaded.model.llm.get_input_embeddings()(torch.tensor(answers[b])))
        alone = speak_rows(loaded.model, one, [answers[b]], loaded.pad_id)[0]
        alone.wave()
        assert torch.equal(torch.cat(alone.codes), both[b])
    assert not torch.equal(both[0], both[1])


def test_an_answer_of_one_or_two_code_frames_is_spoken():
    """An untrained decoder may stop after a frame: mel_rvq decodes 1 and 2 frames (its STFT padding was longer
    than such a span) and streamed = whole holds there too."""
    from vita.registry import SPEECH_CODECS, load_builtins

    load_builtins()
    codec = SPEECH_CODECS.build("mel_rvq")
    for n in (1, 2):
        codes = torch.randint(0, codec.codebook_size, (n, codec.codebooks))
        whole = codec.decode(codes)
        assert whole.shape == (n * codec.samples_per_frame,) and torch.isfinite(whole).all()
        assert torch.allclose(torch.cat(list(codec.decode_chunks([codes[:1], codes[1:]]))), whole, atol=1e-5)


def test_a_model_without_a_speech_decoder_says_so_in_one_line():
    from vita.errors import ConfigError
    from vita.infer import load_target
    from vita.infer.speak import speak_rows

    plain = load_target(None, TINY)
    with pytest.raises(ConfigError, match="no speech decoder"):
        speak_rows(plain.model, {}, [[1]], plain.pad_id)


def _wav(path):
    wave, rate = sf.read(str(path), dtype="float32")
    assert rate == 16000 and wave.ndim == 1
    return wave


def test_chat_speak_writes_a_wav_and_batch_mode_a_wav_per_row(loaded, tmp_path, monkeypatch, capsys):
    import vita.chat
    import vita.infer

    monkeypatch.setattr(vita.infer, "load_target", lambda *a, **k: loaded)
    out = tmp_path / "hello.wav"
    assert vita.chat.main([*TINY, "--prompt", "Hello", "--max-new-tokens", "8", "--speak", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"(speech: {out}, " in said and "first chunk" in said
    assert len(_wav(out)) > 1000
    assert vita.chat.main([*TINY, "--prompt", "Hello", "--speak", str(tmp_path / "no" / "x.wav")]) == 2
    assert "the folder" in capsys.readouterr().err
    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps({"id": f"q{i}", "conversations": [{"from": "human", "value": q}]}) + "\n"
                           for i, q in enumerate(QUESTIONS * 2)))
    preds = tmp_path / "preds.jsonl"
    assert vita.chat.main([*TINY, "--input", str(src), "--output", str(preds), "--speak", str(tmp_path / "wavs"),
                           "--max-new-tokens", "6", "--batch-size", "3"]) == 0
    rows = [json.loads(x) for x in preds.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q0", "q1", "q2", "q3"]
    waves = [_wav(r["speech"]) for r in rows]
    assert all(len(w) > 0 for w in waves)
    assert [r["speech"].rsplit("/", 1)[1] for r in rows] == ["00000.wav", "00001.wav", "00002.wav", "00003.wav"]
    assert all(abs(len(w) - r["speech_seconds"] * 16000) <= 8 for w, r in zip(waves, rows))
    assert waves[0].shape == waves[2].shape and abs(waves[0] - waves[2]).max() < 1e-3  # same question, same speech


pexpect = pytest.importorskip("pexpect")


def test_repl_speaks_two_turns_and_survives_a_bad_speak_path(tmp_path):
    folder = tmp_path / "voice"
    child = spawn_repl(["tests.speech_helpers", *TINY, "--max-new-tokens", "6"], tmp_path)
    try:
        speak_into(child, tmp_path / "missing" / "deeper", folder)
        child.expect(r": a WAV per answer in \S*voice/\)")
        child.expect("you> ")
        for n in (1, 2):
            child.sendline("Hello, who are you?" if n == 1 else "And what do you do?")
            child.expect(r"\[\d+ tokens, [0-9.]+ tokens/s\]")
            child.expect(rf"\(speech: \S*answer_00{n}\.wav, [0-9.]+ s of speech, first chunk \d+ ms, RTF [0-9.]+\)")
            child.expect("you> ")
        child.sendline("/speak off")
        child.expect(r"\(speech off\)")
        child.expect("you> ")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, (tmp_path / "session.log").read_text()[-3000:]
    assert sorted(p.name for p in folder.iterdir()) == ["answer_001.wav", "answer_002.wav"]
    assert all(len(_wav(p)) > 0 for p in folder.iterdir())


# -- metrics --------------------------------------------------------------------------------------------------------
def test_asr_wer_is_low_on_real_flite_speech_and_high_on_noise():

    from vita.data.speak import flite_speech, sentences
    from vita.eval.asr import load_asr
    from vita.eval.metrics import METRICS, compute_rows

    asr = load_asr()
    assert load_asr("whisper-tiny.en") is asr  # loaded once per process
    texts = sentences("heldout")[:2]
    rows = []
    for t in texts:
        wave, rate = flite_speech(t)
        rows.append({"prediction": t, "transcript": asr(wave, rate), "first_chunk_ms": 5.0})
    clean = compute_rows(["asr_wer", "asr_cer", "first_chunk_ms"], rows)
    assert clean["asr_wer"] < 0.25 and clean["asr_cer"] < 0.15 and clean["first_chunk_ms"] == 5.0
    noise = np.random.default_rng(0).normal(0, 0.3, 16000 * 3).astype("float32")
    noisy = [asr(noise, 16000) for _ in texts]
    assert METRICS.get("asr_wer")(noisy, texts) > 0.8


def test_vita_eval_scores_spoken_answers(tmp_path, monkeypatch, capsys):
    import vita.eval.__main__ as ev
    import vita.infer

    real = vita.infer.load_target
    monkeypatch.setattr(vita.infer, "load_target", lambda *a, **k: speaking(real(*a, **k)))
    src = tmp_path / "spoken.jsonl"
    src.write_text("".join(json.dumps({"id": f"s{i}", "conversations": [
        {"from": "human", "value": q}, {"from": "gpt", "value": "I am fine."}]}) + "\n" for i, q in enumerate(QUESTIONS)))
    sets = f"+data.eval={{spoken:{{annotations:[{src}],metric:[asr_wer,asr_cer,first_chunk_ms]}}}}"
    out = tmp_path / "ev"
    # SmolLM2 (real weights) so that the answers have words; its speech decoder is random, so its asr_wer is high
    assert ev.main(["model=smol_lm", "data=chatterbot", sets, "--output", str(out), "--max-new-tokens", "6"]) == 0
    got = json.loads((out / "metrics.json").read_text())["metrics"]["spoken"]
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["s0", "s1"] and all("transcript" in r and r["speech_seconds"] > 0 for r in rows)
    assert all(r["prediction"] for r in rows)
    assert got["asr_wer"] >= 0.5 and got["asr_cer"] > 0 and got["first_chunk_ms"] > 0
    again = ev.score_predictions(out / "predictions.jsonl", "asr_wer,asr_cer,first_chunk_ms")["spoken"]
    assert again["asr_wer"] == pytest.approx(got["asr_wer"]) and again["first_chunk_ms"] == pytest.approx(
        got["first_chunk_ms"])
    # a model that cannot speak: one line naming the set, before anything runs
    monkeypatch.setattr(vita.infer, "load_target", real)
    capsys.readouterr()
    assert ev.main([*TINY, sets, "--output", str(tmp_path / "ev2")]) != 0
    err = capsys.readouterr().err
    assert "eval set 'spoken' asks for asr_wer, asr_cer, first_chunk_ms, but this model has no speech decoder" in err


# -- vita.serve ------------------------------------------------------------------------------------------------------
def test_serve_answers_in_audio_whole_and_streamed(loaded):
    """``modalities: ["text", "audio"]``: ``message.audio`` holds the spoken answer as one WAV (with its transcript);
    streamed, ``delta.audio`` WAV pieces concatenate to the same samples. The in-process app on the tiny speaking
    model (the live-server API tests are tests/test_serve.py)."""
    from fastapi.testclient import TestClient

    from vita.infer import Conversation, collate_prompts, conversation_prompt
    from vita.infer.speak import speak_rows
    from vita.serve import Settings, create_app

    app = create_app(loaded, Settings(model_name="tiny"))
    ask = {"model": "tiny", "messages": [{"role": "user", "content": QUESTIONS[1]}], "max_tokens": 6,
           "modalities": ["text", "audio"], "audio": {"format": "wav"}, "return_token_ids": True}
    with TestClient(app) as c:
        assert c.get("/v1/models").json()["data"][0]["vita"]["output"] == ["text", "audio"]
        r = c.post("/v1/chat/completions", json=ask)
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        audio = choice["message"]["audio"]
        assert audio["transcript"] == choice["message"]["content"] and audio["id"].startswith("audio_")
        whole, rate = _b64wav(audio["data"])
        assert rate == 16000
        conv = Conversation()
        conv.add_user(QUESTIONS[1])
        batch = collate_prompts([conversation_prompt(loaded.processor, conv)], loaded.pad_id)
        ref = speak_rows(loaded.model, batch, [choice["token_ids"]], loaded.pad_id)[0].wave()
        assert len(whole) == len(ref) and abs(whole - ref.clamp(-1, 1).numpy()).max() < 1e-4
        with c.stream("POST", "/v1/chat/completions", json={**ask, "stream": True}) as s:
            events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
        deltas = [e["choices"][0]["delta"] for e in events if e.get("choices")]
        parts = [d["audio"] for d in deltas if "audio" in d]
        pieces = [_b64wav(p["data"])[0] for p in parts if "data" in p]
        assert len(pieces) >= 2 and parts[-1]["transcript"] == "".join(d.get("content", "") for d in deltas)
        assert abs(np.concatenate(pieces) - whole).max() == 0
        bad = c.post("/v1/chat/completions", json={**ask, "audio": {"format": "mp3"}})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "audio.format"
        assert c.post("/v1/chat/completions", json={**ask, "modalities": ["text"]}).json()["choices"][0][
            "message"].get("audio") is None
