"""A live ``python -m vita.serve`` for the serve tests: started once per test module, read back by its log."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, vita_env


class LiveServer:
    """``python -m vita.serve ARGS --port 0`` in a subprocess; ``url`` once it printed ``ready on``."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None, timeout: float = 300) -> None:
        self.log = log
        self.out = open(log, "w")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen([sys.executable, "-m", "vita.serve", *args, "--port", "0"], cwd=ROOT,
                                     env=env or vita_env(), stdout=self.out, stderr=subprocess.STDOUT, text=True)
        end = time.monotonic() + timeout
        while True:
            m = re.search(r"ready on (http://\S+)", log.read_text())
            if m:
                self.url = m.group(1)
                return
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise AssertionError(f"vita.serve did not start (rc {self.proc.returncode}):\n{log.read_text()[-4000:]}")
            time.sleep(0.5)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


def wait_for(check, what: str, timeout: float = 120):
    """Poll ``check()`` until it returns something true (a liveness wait, not a timing assertion)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")
