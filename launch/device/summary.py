"""``python launch/device/summary.py OUT``: the device run's results as one markdown page, ``OUT/SUMMARY.md``.

Reads what launch/device/run.sh left in OUT: ``parts.jsonl`` (each part's budget, time, exit code),
``tests.xml`` (pytest's JUnit report; when a part was cut before pytest wrote it, the ``-v`` lines of
``tests.log``), ``bench.json`` (python -m vita.bench.gpu) and the environment lines of ``kit.log``. The
page (headings from level 3) is what docs/BENCHMARKS.md's "GPU (one device)" section shows: saved as
docs/device_summary.md, ``python -m vita.bench --render`` puts it there.
Only the Python standard library: it must run even when the kit did not install.
"""

from __future__ import annotations

import datetime
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def parts(out: Path) -> list[dict]:
    f = out / "parts.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.is_file() else []


def test_results(out: Path) -> list[tuple[str, str, str]]:
    """(test, outcome, seconds or message) per test: from the JUnit report, else from the -v log."""
    xml = out / "tests.xml"
    rows = []
    if xml.is_file():
        for case in ET.parse(xml).getroot().iter("testcase"):
            outcome, note = "passed", f"{float(case.get('time', 0)):.1f} s"
            for tag in ("failure", "error", "skipped"):
                el = case.find(tag)
                if el is not None:
                    outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
                    note = (el.get("message") or "").splitlines()[0][:120] if el.get("message") else tag
            rows.append((case.get("name", "?"), outcome, note))
        return rows
    log = out / "tests.log"
    if log.is_file():
        for m in re.finditer(r"::(\S+) (PASSED|FAILED|SKIPPED|ERROR)", log.read_text()):
            rows.append((m.group(1), m.group(2).lower() if m.group(2) in ("PASSED", "SKIPPED") else m.group(2),
                         "(from tests.log: the part was cut before pytest's report)"))
    return rows


def bench_table(out: Path) -> list[str]:
    f = out / "bench.json"
    if not f.is_file():
        return ["No figures: the benchmark wrote none (see bench.log)."]
    r = json.loads(f.read_text())
    lines = [r.get("what", ""), "",
             "| packing | steps | ms/step | tokens/s | samples/s | TFLOP/s | MFU | last loss | whole arm |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for arm in ("padded", "packed"):
        a = r.get(arm)
        if a is None:
            lines.append(f"| {arm} | - | - | - | - | - | - | - | not reached |")
            continue
        lines.append(f"| {arm} | {a['steps']} | {a['step_ms']:.1f} | {a['tokens_per_s']:.0f} | {a['samples_per_s']:.2f} | "
                     f"{a['tflops']:.2f} | {a['mfu']:.1%} | {a['loss']:.4f} | {'yes' if a.get('complete') else 'cut'} |")
    if "padded" in r and "packed" in r:
        lines += ["", f"Packing speed-up (samples/s, packed / padded): "
                      f"{r['packed']['samples_per_s'] / r['padded']['samples_per_s']:.2f}x."]
    return lines


def environment(out: Path) -> list[str]:
    log = out / "kit.log"
    if not log.is_file():
        return []
    keep = re.compile(r"^(python \d|  (deepspeed|transformers|torch|triton|flash-attn|liger-kernel) |building |fused Adam|"
                      r"no CUDA|missing)")
    return [x.rstrip() for x in log.read_text().splitlines() if keep.match(x)]


def render(out: Path) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    env = environment(out)
    device = next((m.group(1) for x in env if (m := re.search(r", device (.+)$", x))), "unknown device")
    lines = [f"### launch/device/run.sh on {device}, {now}", ""]
    if env:
        lines += ["```", *env, "```", ""]
    lines += ["#### Parts", "", "| part | budget s | seconds | exit | cut at budget |", "|---|---:|---:|---:|---|"]
    for p in parts(out):
        lines.append(f"| {p['part']} | {p['budget_s']} | {p['seconds']} | {p['rc']} | {'yes' if p['timed_out'] else 'no'} |")
    tests = test_results(out)
    counts = {k: sum(1 for t in tests if t[1] == k) for k in ("passed", "FAILED", "ERROR", "skipped")}
    lines += ["", "#### GPU checks (pytest -m gpu tests/test_gpu_checks.py)", "",
              ", ".join(f"{v} {k.lower()}" for k, v in counts.items()), "", "| test | outcome | time / message |",
              "|---|---|---|"]
    lines += [f"| {name} | {outcome} | {note.replace('|', '/')} |" for name, outcome, note in tests]
    lines += ["", "#### Throughput (python -m vita.bench.gpu)", "", *bench_table(out), ""]
    return "\n".join(lines)


def main(out: Path) -> int:
    page = render(out)
    (out / "SUMMARY.md").write_text(page)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
