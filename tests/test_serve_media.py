"""``python -m vita.serve`` on smol_omni (SmolLM2 + Whisper tiny.en encoder + tiny SigLIP) with an API key
(issue 21): images, audio and video in through the ``openai`` client, media errors, the key on every
route, and the web page in headless Chromium (text, an uploaded audio file, then a recording from
Chromium's fake microphone).

One live server for the module, started with ``--api-key`` and ``--media-root`` = the demo data set's images
(``make demo-data``).
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import time

import pytest

from tests.data_fixtures import demo_root
from tests.serve_helpers import LiveServer

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.slow
KEY = "test-key-21"
AUTH = {"Authorization": f"Bearer {KEY}"}
GOOD = {"model": "smol_omni", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def media():
    root = demo_root()
    return {"root": root, "image": root / "images" / "astronaut.png", "audio": root / "spoken" / "chat_q0.wav",
            "video": root / "video" / "tree.avi"}


@pytest.fixture(scope="module")
def server(media, tmp_path_factory):
    s = LiveServer(["model=smol_omni", "--api-key", KEY, "--media-root", str(media["root"] / "images"), "--max-media-mb", "2"],
                   tmp_path_factory.mktemp("serve_media") / "server.log")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=600)


def _b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _image(path) -> dict:
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{_b64(path)}"}}


def _audio(path) -> dict:
    return {"type": "input_audio", "input_audio": {"data": _b64(path), "format": "wav"}}


def _ask(client, parts: list[dict], max_tokens: int = 8):
    return client.chat.completions.create(model="smol_omni", messages=[{"role": "user", "content": parts}],
                                          max_tokens=max_tokens, extra_body={"return_token_ids": True})


def test_the_api_key_is_checked_on_every_route(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        for method, path in [("GET", "/health"), ("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                             ("GET", "/v1/nothing")]:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                r = c.request(method, path, headers=headers, json=GOOD)
                assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", (path, r.text)
        assert c.get("/health", headers=AUTH).json()["status"] == "ok"
        assert "<title>vita chat</title>" in c.get("/").text  # the static page holds nothing; it asks for the key
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_image_and_audio_questions_are_answered_as_vita_chat_answers_them(client, media, capsys):
    card = client.models.list().data[0]
    assert card.id == "smol_omni" and card.vita["input"] == ["text", "image", "video", "audio"]
    text_only = _ask(client, [{"type": "text", "text": "What is in the picture?"}])
    image = _ask(client, [_image(media["image"]), {"type": "text", "text": "What is in the picture?"}])
    audio = _ask(client, [_audio(media["audio"]), {"type": "text", "text": "What did you hear?"}])
    for r in (image, audio):
        assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens >= 1
        assert r.usage.prompt_tokens > text_only.usage.prompt_tokens + 10  # the media's placeholder tokens
    from vita.chat import main

    question = "Describe the picture and the sound."
    assert main(["model=smol_omni", "--prompt", question, "--image", str(media["image"]), "--audio",
                 str(media["audio"]), "--max-new-tokens", "8", "--json"]) == 0
    want = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    both = _ask(client, [_image(media["image"]), _audio(media["audio"]), {"type": "text", "text": question}])
    assert both.prompt_token_ids == want["prompt_ids"] and both.choices[0].token_ids == want["ids"]
    assert both.choices[0].message.content == want["prediction"]


def test_video_part_and_paths_under_the_media_root(client, media):
    with_video = _ask(client, [{"type": "video_url", "video_url": {
        "url": f"data:video/x-msvideo;base64,{_b64(media['video'])}"}}, {"type": "text", "text": "What happens?"}])
    by_path = _ask(client, [{"type": "image_url", "image_url": {"url": "astronaut.png"}},
                            {"type": "text", "text": "What is in the picture?"}])
    by_data = _ask(client, [_image(media["image"]), {"type": "text", "text": "What is in the picture?"}])
    assert with_video.choices[0].finish_reason in ("stop", "length") and with_video.usage.prompt_tokens > 100
    assert by_path.choices[0].token_ids == by_data.choices[0].token_ids  # the same file, sent two ways
    absolute = _ask(client, [{"type": "image_url", "image_url": {"url": f"file://{media['image']}"}},
                             {"type": "text", "text": "What is in the picture?"}])
    assert absolute.choices[0].token_ids == by_data.choices[0].token_ids


def test_media_errors_get_their_4xx_and_the_server_goes_on(server, media):
    def user(*parts) -> dict:
        return {**GOOD, "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "What is it?"}]}]}

    noise = base64.b64encode(b"\x89PNG not really an image" * 10).decode()
    cases = [
        ("bad base64", user({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@notbase64"}}), 400,
         "invalid_base64", "messages[0].content[0]: the data is not valid base64"),
        ("undecodable image", user({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{noise}"}}), 400,
         "invalid_media", "messages[0].content[0]"),
        ("undecodable audio", user({"type": "input_audio", "input_audio": {"data": noise, "format": "wav"}}), 400,
         "invalid_media", "unreadable audio"),
        ("unknown audio format", user({"type": "input_audio", "input_audio": {"data": noise, "format": "aac"}}), 400,
         "invalid_media", "'aac'"),
        ("audio bytes in an image part", user({"type": "image_url", "image_url": {
            "url": f"data:audio/wav;base64,{_b64(media['audio'])}"}}), 400, "invalid_media", "send image/* data"),
        ("path escaping the media root", user({"type": "image_url", "image_url": {"url": "../../../etc/passwd"}}), 403,
         "path_not_allowed", "outside --media-root"),
        ("absolute path outside the root", user({"type": "image_url", "image_url": {"url": "file:///etc/hostname"}}),
         403, "path_not_allowed", "outside --media-root"),
        ("missing file under the root", user({"type": "image_url", "image_url": {"url": "none.png"}}), 400,
         "invalid_media", "no such file"),
        ("remote URL", user({"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}), 400,
         "remote_url", "not fetched"),
        ("media over --max-media-mb", user({"type": "input_audio", "input_audio": {
            "data": base64.b64encode(bytes(3 << 20)).decode(), "format": "wav"}}), 413, "media_too_large",
         "--max-media-mb"),
    ]
    with httpx.Client(base_url=server.url, timeout=300, headers=AUTH) as c:
        for name, body, status, code, words in cases:
            r = c.post("/v1/chat/completions", json=body)
            assert r.status_code == status, (name, r.text[:500])
            err = r.json()["error"]
            assert err["code"] == code and words in err["message"], (name, err)
            assert "vita-serve-" not in err["message"], (name, err)  # names the request part, not a temporary file
            assert c.post("/v1/chat/completions", json=GOOD).status_code == 200, name
    assert server.alive() and "Traceback" not in server.text()


def test_the_page_in_headless_chromium_answers_text_an_uploaded_audio_file_and_a_recording(server, media, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Debian chromium + chromium-driver are not installed (make install)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    fake_mic = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]  # a test tone, no prompt
    for flag in [*CHROMIUM_FLAGS, *fake_mic, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    shot = tmp_path / "serve_page.png"
    try:
        wait = WebDriverWait(driver, 300)
        driver.get(server.url + "/")
        driver.find_element(By.ID, "key").send_keys(KEY + Keys.TAB)
        wait.until(lambda d: "smol_omni" in d.find_element(By.ID, "model").text)

        def answers(d):
            return d.find_elements(By.CSS_SELECTOR, ".assistant[data-state=done], .assistant[data-state=error]")

        driver.find_element(By.ID, "prompt").send_keys("What is the capital of France?")
        driver.find_element(By.ID, "send").click()
        wait.until(lambda d: len(answers(d)) == 1)
        driver.find_element(By.ID, "file").send_keys(str(media["audio"]))
        wait.until(lambda d: "attached" in d.find_element(By.ID, "pending").text)
        driver.find_element(By.ID, "prompt").send_keys("What did you hear?")
        driver.find_element(By.ID, "send").click()
        wait.until(lambda d: len(answers(d)) == 2)
        driver.find_element(By.ID, "record").click()  # MediaRecorder on the fake microphone, sent as WAV
        wait.until(lambda d: "stop" in d.find_element(By.ID, "record").text)
        time.sleep(1.5)  # a second and a half of recording (not a timing check)
        driver.find_element(By.ID, "record").click()
        wait.until(lambda d: "recording.wav" in d.find_element(By.ID, "pending").text)
        driver.find_element(By.ID, "send").click()
        wait.until(lambda d: len(answers(d)) == 3)
        driver.save_screenshot(str(shot))
        got = [(a.get_attribute("data-state"), a.text) for a in answers(driver)]
        print("page answers:", got, "screenshot:", shot)
        assert [s for s, _ in got] == ["done", "done", "done"], got
        assert "Paris" in got[0][1] and got[1][1].strip() and got[2][1].strip()
        assert ["[audio]" in u.text for u in driver.find_elements(By.CSS_SELECTOR, ".user")] == [False, True, True]
    finally:
        driver.quit()
    assert shot.stat().st_size > 0
