"""``python -m vita.serve`` on real SmolLM2-135M-Instruct, through the real ``openai`` client (issue 21).

One live server for the module (``LiveServer``): a greedy answer is token for token ``vita.chat
--prompt``'s; streamed chunks concatenate to the same text; 16 concurrent clients x 4 requests get
their single-request answers (in shared batches); every kind of bad request gets its documented 4xx
and the server answers a good request after each; a full queue answers 503 + Retry-After and clients
that leave stop their generation. The per-request timeout runs in-process (a 0.5 s limit).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import re

import pytest

from tests.serve_helpers import LiveServer, wait_for
from tests.test_real_weights import smollm2_dir  # noqa: F401  (session fixture: the dequantised HF folder)

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France?"
N = 24
GOOD = {"model": "smol_lm", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
COUNT = "Count from 1 to 500, separated by commas."


def _overrides(folder) -> list[str]:
    return ["experiment=chatterbot_tiny", "model=smol_lm", f"model.pretrained={folder}", "model.gguf_file=null",
            "data.template=smollm2"]


@pytest.fixture(scope="module")
def server(smollm2_dir, tmp_path_factory):  # noqa: F811
    s = LiveServer([*_overrides(smollm2_dir), "--max-queue", "20", "--max-body-mb", "1", "--max-tokens", "512"],
                   tmp_path_factory.mktemp("serve") / "server.log")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=600)


def _ask(client, text: str, max_tokens: int = N, **kw):
    return client.chat.completions.create(model="smol_lm", messages=[{"role": "user", "content": text}],
                                          max_tokens=max_tokens, extra_body={"return_token_ids": True}, **kw)


def test_greedy_answer_is_vita_chat_s_token_for_token(server, client, smollm2_dir, capsys):  # noqa: F811
    from vita.chat import main

    assert main([*_overrides(smollm2_dir), "--prompt", QUESTION, "--max-new-tokens", str(N), "--json"]) == 0
    want = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    r = _ask(client, QUESTION, temperature=0)
    choice = r.choices[0]
    assert choice.token_ids == want["ids"] and r.prompt_token_ids == want["prompt_ids"]
    assert choice.message.content == want["prediction"] and "Paris" in choice.message.content
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(want["prompt_ids"]), len(want["ids"]))
    assert choice.finish_reason == "stop" and r.model == "smol_lm"
    assert [m.id for m in client.models.list().data] == ["smol_lm"]


def test_streamed_chunks_concatenate_to_the_answer(client):
    text = "Name three colours of the rainbow."
    full = _ask(client, text)
    chunks = list(_ask(client, text, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3 and "".join(pieces) == full.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
        [full.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens == len(full.choices[0].token_ids)


def test_stop_text_length_limit_and_a_multi_turn_conversation(client):
    full = _ask(client, QUESTION).choices[0].message.content
    cut = _ask(client, QUESTION, stop=["Paris"]).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == full[:full.index("Paris")]
    short = _ask(client, QUESTION, max_tokens=3).choices[0]
    assert short.finish_reason == "length" and len(short.token_ids) == 3
    r = client.chat.completions.create(model="smol_lm", max_tokens=N, messages=[
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": QUESTION}, {"role": "assistant", "content": full},
        {"role": "user", "content": [{"type": "text", "text": "And of Italy?"}]}])
    assert "Rome" in r.choices[0].message.content


def test_sixteen_clients_four_requests_each_get_their_single_answers(server, client):
    questions = ["What is 2 plus 2?", "Who wrote Hamlet?", "What do bees make?", "Say hello in Spanish.",
                 "What is the largest planet?", "How many legs does a spider have?", QUESTION,
                 "Name a colour of the sky."]
    single = {q: _ask(client, q, max_tokens=8).choices[0].token_ids for q in questions}
    health = httpx.get(server.url + "/health").json()

    def one_client(i: int) -> list[tuple[str, list[int]]]:
        return [(q, _ask(client, q, max_tokens=8).choices[0].token_ids)
                for q in (questions[(i + k) % len(questions)] for k in range(4))]

    with cf.ThreadPoolExecutor(16) as ex:
        answers = [a for got in ex.map(one_client, range(16)) for a in got]
    assert len(answers) == 64
    assert [q for q, ids in answers if ids != single[q]] == []
    after = httpx.get(server.url + "/health").json()
    assert server.alive() and after["status"] == "ok"
    assert after["served"] - health["served"] == 64
    assert after["batches"] - health["batches"] < 64 and after["largest_batch"] > 1  # forward passes were shared


def _bad_requests() -> list[tuple[str, dict, int, str, str]]:
    def msgs(*messages, **kw) -> dict:
        return {"json": {**GOOD, "messages": list(messages), **kw}}

    user = {"role": "user", "content": "Hi"}
    png = "data:image/png;base64,iVBORw0KGgo="
    return [
        ("not JSON", {"content": b"{model: smol_lm", "headers": {"content-type": "application/json"}}, 400,
         "invalid_json", "not JSON"),
        ("body over --max-body-mb", {"json": {**GOOD, "messages": [{"role": "user", "content": "x" * (1 << 20)}]}},
         413, "body_too_large", "--max-body-mb"),
        ("no messages", {"json": {"model": "smol_lm"}}, 400, "invalid_messages", "non-empty list"),
        ("unknown model", {"json": {**GOOD, "model": "gpt-9"}}, 404, "model_not_found", "'gpt-9'"),
        ("tool role", msgs(user, {"role": "tool", "content": "42"}), 400, "invalid_messages", "'tool'"),
        ("ends with the assistant", msgs(user, {"role": "assistant", "content": "Hello"}), 400,
         "invalid_conversation", "no question"),
        ("two user turns", msgs(user, user), 400, "invalid_conversation", "two user turns in a row"),
        ("system prompt not first", msgs(user, {"role": "system", "content": "Be brief."}), 400,
         "invalid_conversation", "only the first message"),
        ("unknown part type", msgs({"role": "user", "content": [{"type": "file", "file": {}}]}), 400,
         "unsupported_part", "'file'"),
        ("image into a text-only model", msgs({"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": png}}, {"type": "text", "text": "What is it?"}]}), 400,
         "unsupported_modality", "no vision tower"),
        ("audio into a text-only model", msgs({"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}), 400,
         "unsupported_modality", "no audio encoder"),
        ("media marker in the text", msgs({"role": "user", "content": "<image> what is this?"}), 400,
         "invalid_text", "a content part of type image_url"),
        ("temperature out of range", msgs(user, temperature=3), 400, "invalid_parameter", "temperature=3"),
        ("max_tokens 0", msgs(user, max_tokens=0), 400, "invalid_parameter", "max_tokens=0"),
        ("max_tokens over --max-tokens", msgs(user, max_tokens=100000), 400, "invalid_parameter", "--max-tokens"),
        ("several answers", msgs(user, n=2), 400, "invalid_parameter", "n=2"),
        ("audio out", msgs(user, modalities=["text", "audio"], audio={"format": "wav"}), 400, "no_speech_decoder",
         "this model has no speech decoder"),
        ("prompt over the context", msgs({"role": "user", "content": "hello " * 9000}), 400,
         "context_length_exceeded", "context"),
        ("unknown route", {"json": GOOD, "url": "/v1/completions"}, 404, "not_found", "no route /v1/completions"),
        ("GET on the chat route", {"method": "GET"}, 405, "method_not_allowed", "GET is not allowed"),
    ]


def test_bad_requests_get_their_4xx_and_the_server_goes_on(server):
    """Each bad request: its status, OpenAI's error shape, its code and message; then a good request is answered."""
    seen = set()
    with httpx.Client(base_url=server.url, timeout=300) as c:
        for name, kw, status, code, words in _bad_requests():
            kw = dict(kw)
            r = c.request(kw.pop("method", "POST"), kw.pop("url", "/v1/chat/completions"), **kw)
            assert r.status_code == status, (name, r.status_code, r.text[:500])
            err = r.json()["error"]
            assert set(err) == {"message", "type", "param", "code"}, name
            assert err["code"] == code and words in err["message"], (name, err)
            seen.add(code)
            ok = c.post("/v1/chat/completions", json=GOOD)
            assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] in ("stop", "length"), name
    assert len(seen) >= 10 and server.alive()
    assert "Traceback" not in server.text()


def test_full_queue_answers_503_and_clients_that_leave_stop_generating(server):
    with httpx.Client(base_url=server.url, timeout=300) as c:
        def status() -> dict:
            return c.get("/health").json()

        before = status()
        long = {**GOOD, "messages": [{"role": "user", "content": COUNT}], "max_tokens": 400, "stream": True}
        with contextlib.ExitStack() as open_streams:
            first = open_streams.enter_context(c.stream("POST", "/v1/chat/completions", json=long))
            wait_for(lambda: status()["running"] == 1, "the first request to run")
            for _ in range(20):
                open_streams.enter_context(c.stream("POST", "/v1/chat/completions", json=long))
            wait_for(lambda: status()["queued"] == 20, "20 queued requests")
            busy = c.post("/v1/chat/completions", json=GOOD)
            assert busy.status_code == 503 and busy.json()["error"]["code"] == "server_busy", busy.text
            assert int(busy.headers["Retry-After"]) >= 1
            got = next(line for line in first.iter_lines() if '"content": "' in line and '"content": ""' not in line)
            assert got.startswith("data: ")
        # every client left: the running row stops at its next token, the queued ones are dropped
        wait_for(lambda: (s := status())["running"] == 0 and s["queued"] == 0, "the queue to empty")
        after = status()
        assert after["cancelled"] - before["cancelled"] == 21 and after["served"] == before["served"]
        stopped = [int(n) for n in re.findall(r"request stopped after (\d+) tokens \(client left\)", server.text())]
        assert stopped and min(stopped) < 400
        assert c.post("/v1/chat/completions", json=GOOD).status_code == 200


def test_a_request_over_its_timeout_gets_504_and_stops(smollm2_dir):  # noqa: F811
    """In-process app with a 0.5 s limit: 400 tokens cannot come that fast on a CPU; the row is stopped."""
    from fastapi.testclient import TestClient

    from vita.infer import load_target
    from vita.serve import Settings, create_app

    app = create_app(load_target(None, _overrides(smollm2_dir)), Settings(model_name="smol_lm", timeout_s=0.5))
    with TestClient(app) as c:
        r = c.post("/v1/chat/completions", json={**GOOD, "messages": [{"role": "user", "content": COUNT}],
                                                 "max_tokens": 400})
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout", r.text
        assert "--timeout" in r.json()["error"]["message"]
        batcher = app.state.batcher
        wait_for(lambda: batcher.status()["running"] == 0, "the timed-out row to stop")
        assert batcher.status()["cancelled"] == 1


def test_the_api_key_may_come_from_the_environment_and_the_model_name_from_the_target(monkeypatch, tmp_path):
    from vita.serve.__main__ import KEY_ENV, build_parser, model_name

    monkeypatch.setenv(KEY_ENV, "from-env")
    assert build_parser().parse_args([]).api_key == "from-env"
    assert build_parser().parse_args(["--api-key", "flag"]).api_key == "flag"
    assert model_name(str(tmp_path / "run7" / "final"), []) == "run7"
    assert model_name(None, ["model=smol_omni", "data=demo"]) == "smol_omni"
