"""The training console: the tqdm bar stays one bar (loss, lr, tokens/s in its postfix, ETA), a metrics line
comes only every ``train.log_every`` steps (and at the last), and ``metrics.jsonl`` keeps every step."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import PY, ROOT, find_run, vita_env
from vita.engine.metrics import read_metrics

BAR = re.compile(r"^console:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+) \[[\d:]+<[\d:?]+, [^,\]]+(, loss=[\d.]+, "
                 r"lr=[\d.e+-]+, tok/s=\d+)?\]$")  # n/total [elapsed<ETA, rate, postfix]
LOG = re.compile(r"\[vita\]\[INFO\] - step (\d+)  loss ")


def test_bar_and_log_lines_do_not_interleave(tmp_path):
    """A demo-sized run's captured output (stdout and stderr merged, as a terminal shows them): between two bar
    updates there is no log line, except the metrics line of a log_every multiple (or the last step) right
    after the bar reaches that step; nothing else is printed while the bar is open."""
    steps, every = 12, 5
    cmd = [PY, "-m", "vita.run", "experiment=smoke", "name=console", f"output_root={tmp_path}",
           f"train.max_steps={steps}", f"train.log_every={every}", "train.ckpt_every=0", "logging.plot=false"]
    p = subprocess.run(cmd, cwd=ROOT, env=vita_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-3000:]
    pieces = [s.strip() for s in re.split(r"[\r\n]", p.stdout) if s.strip()]
    first = next(k for k, s in enumerate(pieces) if s.startswith("console:"))
    last = max(k for k, s in enumerate(pieces) if s.startswith("console:"))
    shown, logged, redraw = 0, [], None
    for s in pieces[first:last + 1]:
        bar = BAR.match(s)
        if bar:
            n = int(bar.group(1))
            assert int(bar.group(2)) == steps and n >= shown, s  # one bar, never going back
            assert n == 0 or bar.group(3), f"no loss/lr/tok/s in the bar: {s!r}"
            if redraw is not None:  # the bar redrawn under a metrics line shows that line's step
                assert n == redraw, f"bar at {n} right after the metrics line of step {redraw}"
                redraw = None
            shown = n
            continue
        log = LOG.search(s)
        assert log is not None, f"a line other than the bar or a metrics line while the bar is open: {s!r}"
        step = int(log.group(1))
        assert step % every == 0 or step == steps, f"metrics line at step {step} (log_every={every})"
        # tqdm draws at most 10 times a second, so the last drawn bar may still show an earlier step
        assert redraw is None and step >= shown, f"metrics line of step {step}, bar at {shown}"
        logged.append(step)
        redraw = step
    assert shown == steps
    assert logged == [5, 10, 12]
    rows = read_metrics(find_run(tmp_path, "console") / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, steps + 1))  # the file keeps every step


def test_bitsandbytes_remote_kernel_note_is_not_shown():
    """Importing bitsandbytes (peft does, for every LoRA run) logs "Set trust_remote_code=True ..." (online) or "not
    available in the local cache" (offline) when its optional Hub kernel cannot be fetched; vita asks for no remote
    code and bitsandbytes falls back to its own kernel, so vita/console.py drops those lines."""
    code = "import logging, sys; logging.basicConfig(stream=sys.stderr); {}import bitsandbytes"
    runs = {quiet: subprocess.run([PY, "-c", code.format("from vita.console import quiet_console; quiet_console(); "
                                                         if quiet else "")], cwd=ROOT, env=vita_env(),
                                  capture_output=True, text=True, timeout=300)
            for quiet in (False, True)}
    for p in runs.values():
        assert p.returncode == 0, p.stderr[-2000:]
    if "gemm_4bit_forward" not in runs[False].stderr:
        pytest.skip("bitsandbytes tries no Hub kernel on this CPU (no AVX512-BF16): nothing to filter")
    for said in ("gemm_4bit_forward", "trust_remote_code", "publisher trust check"):
        assert said not in runs[True].stderr, runs[True].stderr[-2000:]


def test_the_bar_names_the_experiment_not_the_root_default(tmp_path):
    """A run that keeps the root config's name (``demo``, as the demo experiment and any run without one do) is
    called by its experiment on the bar; an explicit name (the test above: ``console``) wins."""
    cmd = [PY, "-m", "vita.run", "experiment=smoke", "name=demo", f"output_root={tmp_path}", "train.max_steps=2",
           "train.ckpt_every=0", "logging.plot=false"]
    p = subprocess.run(cmd, cwd=ROOT, env=vita_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout[-3000:]
    labels = {s.strip().split(":")[0] for s in re.split(r"[\r\n]", p.stdout) if re.match(r"^\S+:\s+\d+%\|", s.strip())}
    assert labels == {"smoke"}, labels
