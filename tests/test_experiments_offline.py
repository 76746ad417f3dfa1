"""Every shipped experiment, run offline with an empty Hugging Face cache: it starts (its model is built and
the run dir announced; the test then stops it) or exits 2 with one ``error:`` line and no traceback, and no
process contacts the network.

"Contacts the network" is measured, not assumed: every proxy variable points at a local listener that
counts connections (huggingface_hub, requests and httpx all honour them); a control run without
``HF_HUB_OFFLINE`` shows that the listener does see the hub being tried.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import quiet, vita_env
from vita.config import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
PY = os.environ.get("VITA_TEST_PY") or __import__("sys").executable
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
STARTED = "world size"  # vita.run's "run dir ..., world size N" line: the model is built, training begins


class Listener:
    """A TCP listener on 127.0.0.1 that counts (and drops) every connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture(scope="module")
def listener():
    lst = Listener()
    yield lst
    lst.close()


def _env(listener: Listener, hf_home: Path, offline: bool = True) -> dict:
    proxy = f"http://127.0.0.1:{listener.port}"
    env = vita_env(HF_HOME=str(hf_home), HTTP_PROXY=proxy, HTTPS_PROXY=proxy, ALL_PROXY=proxy, http_proxy=proxy,
                   https_proxy=proxy, all_proxy=proxy, NO_PROXY="", no_proxy="")
    if not offline:
        env.pop("HF_HUB_OFFLINE")
    return env


def _launch(args: list[str], env: dict, timeout: float = 600) -> tuple[str, str, int | None]:
    """Run ``vita.run``; stop it once it announces its run (returns rc None then)."""
    proc = subprocess.Popen([PY, "-m", "vita.run", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    out: list[str] = []
    err: list[str] = []
    t = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    started = False
    for line in proc.stdout:
        out.append(line)
        if STARTED in line:
            started = True
            os.killpg(proc.pid, signal.SIGKILL)
            break
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"vita.run {' '.join(args)} neither started nor stopped:\n{''.join(out)[-3000:]}")
    proc.wait()
    t.join(timeout=10)
    return "".join(out), "".join(err), None if started else proc.returncode


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_starts_or_says_one_line_offline(experiment, listener, tmp_path):
    before = listener.connections
    out, err, rc = _launch([f"experiment={experiment}", *quiet(experiment, tmp_path / "outputs")],
                           _env(listener, tmp_path / "hf_home"))
    assert "Traceback" not in out + err, (out + err)[-3000:]
    if rc is not None:
        lines = [ln for ln in err.splitlines() if ln.strip() and "Warning" not in ln]
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (out + err)[-3000:]
        assert any(k in lines[0] for k in ("stage.init_from", "model.", "VITA_DATA", "data.", "engine.sequence_parallel")), lines[0]
    assert listener.connections == before, f"{experiment} tried the network {listener.connections - before} time(s)"


@pytest.mark.slow
def test_without_offline_the_listener_sees_the_hub_tried(listener, tmp_path):
    """The control for the test above: the same kind of run without HF_HUB_OFFLINE reaches for the hub, once per
    reference at most (no retry storm), and still ends in one line naming the key and how to point it at a folder."""
    before = listener.connections
    out, err, rc = _launch(["experiment=stage1_qwen", *quiet("ctl", tmp_path / "outputs")],
                           _env(listener, tmp_path / "hf_home", offline=False))
    assert rc == 2 and "Traceback" not in out + err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: model.pretrained=Qwen/Qwen2.5-7B-Instruct") and "model.pretrained=DIR" in line
    assert 1 <= listener.connections - before <= 2
