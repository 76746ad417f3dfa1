"""The device kit (issue 25): ``launch/device/prepare.sh`` makes it, ``launch/device/run.sh`` uses it.

The lent GPU image has Python 3.12, torch and much else, but not DeepSpeed, Hydra, omegaconf and the rest
of ``launch/device/packages.txt``, and no network. Here (CPython 3.11, no GPU) the test builds a stand-in of
that image: a bare venv holding, as links into this environment, only the packages the image has
(``launch/device/image_packages.txt``, from KINDS.md) plus the compiled packages whose kit wheels are for
3.12 and so cannot install here. Everything else must come from the kit's pure wheels, which run.sh
installs with ``pip install --no-index --no-deps --target``; then run.sh's CPU smoke mode runs every part
(install, DeepSpeed ops, the gpu-marked checks, the benchmark, the summary) and each writes its file.
A second run cuts the benchmark at a 20-second budget: it stops there and still writes its results.
The kit is reused when ``.whl/MANIFEST.txt`` is there (prepare.sh skips what it has), else downloaded.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / ".whl"
MIB = 1 << 20


def _kitmod():
    """launch/device/kit.py as a module (launch/ is no package)."""
    sys.path.insert(0, str(REPO / "launch" / "device"))
    try:
        import kit
    finally:
        sys.path.pop(0)
    return kit


def test_installable_is_what_this_python_accepts(tmp_path):
    """run.sh installs the kit's wheels whose tags this interpreter supports: here (CPython 3.11) the pure ones and
    the stable-ABI ones from 3.11 on, never a cp312-only wheel; a kit without its manifest is refused by name."""
    kit = _kitmod()
    names = ["hydra_core-1.3.8-py3-none-any.whl", "pydantic_core-2.50.5-cp312-cp312-manylinux2014_x86_64.whl",
             "av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl", "soundfile-0.14.0-py2.py3-none-manylinux_2_28_x86_64.whl",
             "old-1.0-cp38-cp38-manylinux2014_x86_64.whl"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    got = {w.name for w in kit.installable(tmp_path)}
    assert "hydra_core-1.3.8-py3-none-any.whl" in got and "old-1.0-cp38-cp38-manylinux2014_x86_64.whl" not in got
    if sys.version_info[:2] == (3, 11) and sys.platform == "linux" and os.uname().machine == "x86_64":
        assert got == {names[0], names[2], names[3]}
    assert [kit.wheel_info(tmp_path / n)[2] for n in names[:2]] == [True, False]
    with pytest.raises(SystemExit, match="MANIFEST.txt is missing: run launch/device/prepare.sh"):
        kit.main(["installable", "--kit", str(tmp_path)])
    bad = tmp_path / "packages.txt"
    bad.write_text("# a comment\ndeepspeed sdist core the engine\nhjson wheel maybe why\n")
    with pytest.raises(SystemExit, match=r"packages.txt:3: expected 'name wheel\|sdist core\|media why'"):
        kit.read_spec(bad)


def manifest_rows() -> list[tuple[int, str, str, str]]:
    rows = []
    for line in (KIT / "MANIFEST.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            size, wheel, role, kind = line.split()
            rows.append((int(size), wheel, role, kind))
    return rows


@pytest.fixture(scope="module")
def kit() -> list[tuple[int, str, str, str]]:
    """launch/device/prepare.sh with this environment's python: downloads (or reuses) the kit."""
    proc = subprocess.run(["bash", "launch/device/prepare.sh"], cwd=REPO, env={**os.environ, "PY": sys.executable},
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return manifest_rows()


@pytest.mark.slow
def test_prepare_makes_a_kit_for_the_device_within_its_size(kit):
    """One wheel per package of packages.txt, at this environment's version; DeepSpeed built here as a pure wheel
    (its ops left to JIT); every compiled wheel is for CPython 3.12 (or the stable ABI) on manylinux x86-64;
    the kit and the tree that travels with it stay under 60 MiB, as the manifest's totals say."""
    kitmod = _kitmod()
    names = {kitmod.canon(e.name): e for e in kitmod.read_spec()}
    got = {}
    for size, wheel, role, kind in kit:
        name, version, pure = kitmod.wheel_info(KIT / wheel)
        assert (KIT / wheel).stat().st_size == size
        assert version == md.version(name), (wheel, md.version(name))
        assert kind == ("pure" if pure else "binary") and role == names[name].role
        if not pure:
            assert re.search(r"-(cp312-cp312|cp3\d+-abi3|py2?\.?py3-none)-manylinux[^ ]*x86_64\.whl$", wheel), wheel
        got[name] = wheel
    assert set(got) == set(names) or "# dropped to fit" in (KIT / "MANIFEST.txt").read_text()
    assert re.fullmatch(r"deepspeed-[\d.]+-py3-none-any\.whl", got["deepspeed"])
    total = sum(size for size, *_ in kit)
    assert total + kitmod.tree_bytes() <= 60 * MIB
    assert f"kit {total} bytes" in (KIT / "MANIFEST.txt").read_text()
    ignored = subprocess.run(["git", "check-ignore", "-q", ".whl/MANIFEST.txt"], cwd=REPO)
    assert ignored.returncode == 0, ".whl/ must be ignored by git (it travels as carry, not as tracked files)"


def image_standin(dest: Path, binary_wheels: list[str]) -> Path:
    """A bare venv (no system site-packages) whose site-packages links, as installed here, the image's packages with
    what they require here (the image is consistent: its own versions' needs are met there), never a package the kit
    brings, and the kit's compiled packages (their 3.12 wheels cannot install on this Python); returns its python."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    site = next((dest / "lib").glob("python3*/site-packages"))
    kitmod = _kitmod()
    kit_names = {kitmod.canon(e.name) for e in kitmod.read_spec()}
    names = (REPO / "launch" / "device" / "image_packages.txt").read_text()
    todo = [canonicalize_name(w) for line in names.splitlines() if not line.startswith("#") for w in line.split()]
    todo = [n for n in todo if n not in kit_names] + [kitmod.wheel_info(KIT / w)[0] for w in binary_wheels]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # the image has it, this machine does not (CUDA libraries, jax, ...): nothing vita needs
        for spec in dist.requires or []:
            req = Requirement(spec)
            dep = canonicalize_name(req.name)
            if (req.marker is None or req.marker.evaluate({"extra": ""})) and dep not in kit_names:
                todo.append(dep)
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            src = Path(str(dist.locate_file(top)))
            if src.exists() and not (site / top).exists():
                (site / top).symlink_to(src)
    return dest / "bin" / "python"


def _importable(py: Path, module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([str(py), "-c", code], env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                          cwd="/").returncode == 0


def _parts(out: Path) -> dict[str, dict]:
    return {p["part"]: p for p in map(json.loads, (out / "parts.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def standin(kit, tmp_path_factory) -> Path:
    binary = [w for _, w, _, kind in kit if kind == "binary"]
    py = image_standin(tmp_path_factory.mktemp("image") / "venv", binary)
    assert _importable(py, "torch") and _importable(py, "transformers") and _importable(py, "pydantic_core")
    for missing in ("deepspeed", "hydra", "omegaconf", "pydantic", "antlr4", "hjson", "vita"):
        assert not _importable(py, missing), f"the stand-in image must lack {missing}: the kit has to bring it"
    return py


def run_kit(py: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    """run.sh in smoke mode with the stand-in's python; its work folder is run.sh's default (/tmp/vita-device):
    a kit installed there by an earlier run is kept, and so are the DeepSpeed ops JIT-built against it."""
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "TORCH_EXTENSIONS_DIR")}
    return subprocess.run(["bash", "launch/device/run.sh"], cwd=REPO, capture_output=True, text=True, timeout=1500,
                          env={**base, "VITA_DEVICE_SMOKE": "1", "VITA_PY": str(py), "OUT": str(out), **env})


@pytest.mark.slow
def test_run_sh_smoke_runs_every_part_in_its_budget_on_the_kit_alone(standin, tmp_path):
    """run.sh in CPU smoke mode on the stand-in image: the kit installs (its pure wheels: what this Python can
    take), every package imports, each part ends within its budget (+ the 5 s kill grace) with exit 0 and its
    results file: the six gpu checks pass on the CPU, the benchmark reports both arms, SUMMARY.md has the
    tables; at most 8 files with names the device tool brings back."""
    out = tmp_path / "out"
    proc = run_kit(standin, out)
    log = proc.stdout[-4000:] + proc.stderr[-2000:]
    parts = _parts(out)
    assert list(parts) == ["install", "ops", "tests", "bench", "summary"], log
    for name, p in parts.items():
        assert p["seconds"] <= p["budget_s"] + 6, (name, p)
        assert p["rc"] == 0 and not p["timed_out"], (name, p, log)
    assert proc.returncode == 0, log
    kit_log = (out / "kit.log").read_text()
    assert "every package of the kit imports" in kit_log
    assert re.search(r"deepspeed +[\d.]+ +core +from kit", kit_log) and re.search(r"hydra-core .* from kit", kit_log)
    assert "no CUDA device: DeepSpeed's fused Adam is not built" in kit_log
    junit = (out / "tests.xml").read_text()
    assert re.search(r'tests="6"', junit) and 'failures="0"' in junit and 'errors="0"' in junit, junit[:500]
    assert 'skipped="0"' in junit
    bench = json.loads((out / "bench.json").read_text())  # launch/gpu_bench.sh --smoke: the log's figures per arm
    assert bench["complete"] and bench["environment"]["device"] is None
    for arm in ("padded", "packed"):
        r = bench[arm]
        assert r["steps"] == 3 and r["complete"] and r["tokens_per_s"] > 0 and r["tflops"] > 0, r
        assert 0 < r["mfu"] < 1 and math.isfinite(r["loss"]), r
    assert "| packed" in (out / "bench.log").read_text() and "packing speed-up" in (out / "bench.log").read_text()
    summary = (out / "SUMMARY.md").read_text()
    assert "6 passed, 0 failed, 0 error, 0 skipped" in summary
    assert "| packed | 3 |" in summary and "Packing speed-up" in summary
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files), files
    assert set(files) == {"kit.log", "tests.log", "tests.xml", "bench.log", "bench.json", "parts.jsonl", "SUMMARY.md"}


@pytest.mark.slow
def test_run_sh_stops_a_part_at_its_budget_and_keeps_its_results(standin, tmp_path):
    """The benchmark alone with a 20 s budget (it gives its arms 5 s of it, too little to build a model): the arms are
    stopped there, the part ends within its budget, bench.json still says what was reached (nothing, not complete)
    and the summary still writes its page."""
    out = tmp_path / "out"
    proc = run_kit(standin, out, VITA_DEVICE_PARTS="install bench summary",
                   VITA_DEVICE_BUDGET_BENCH="20")
    parts = _parts(out)
    assert list(parts) == ["install", "bench", "summary"], proc.stdout[-3000:]
    assert parts["bench"]["seconds"] <= 20 + 6
    bench = json.loads((out / "bench.json").read_text())
    assert bench["complete"] is False and "packed" not in bench
    assert "stopped at its budget" in (out / "bench.log").read_text()
    assert "| packed | - |" in (out / "SUMMARY.md").read_text()
    assert proc.returncode == 0  # the bench stopped its own arms in time: a cut arm is a result, not a failure
