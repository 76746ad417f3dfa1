"""The device kit: wheels for the lent GPU machine (CPython 3.12, manylinux x86-64, no network).

    python launch/device/kit.py prepare [--kit .whl] [--limit-mib 60]   # here (launch/device/prepare.sh)
    python launch/device/kit.py installable [--kit .whl]                 # there (launch/device/run.sh)
    python launch/device/kit.py check [--site DIR]                       # there, after the install

``prepare`` reads ``launch/device/packages.txt``, takes each package's version from the interpreter
running it (the versions vita's tests pass with here), downloads the wheels built for the device
(``pip download --only-binary=:all: --python-version 3.12 --platform manylinux...``) and builds the
sdist-only ones here as pure wheels (DeepSpeed with ``DS_BUILD_OPS=0``: its ops are JIT-built on
the device). It keeps one wheel per package (stale versions are removed), drops ``media`` wheels,
largest first, while the kit and the tree that travels with it exceed ``--limit-mib``, and writes
``MANIFEST.txt`` (size, wheel, role, pure/binary, one a line; totals at the end). Re-running skips
the wheels already there.

``installable`` prints the kit's wheels that the running interpreter can install (its tags match):
on the device, all of them; on this machine (CPython 3.11), the pure ones, so that run.sh's CPU smoke
mode installs exactly the kit's pure part and takes the compiled packages from the environment.

``check`` imports every package of the kit (and vita's training entry point) and prints the versions that
run: the kit's own, or the environment's where the kit's wheel is not for this interpreter; a missing one
fails with its name.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SPEC = HERE / "packages.txt"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
MIB = 1 << 20


def _packaging():
    try:
        from packaging import tags, utils
    except ImportError:  # pip vendors it
        from pip._vendor.packaging import tags, utils  # type: ignore[no-redef]
    return tags, utils


@dataclass(frozen=True)
class Entry:
    name: str
    how: str  # wheel: download the device's wheel; sdist: build a pure wheel here
    role: str  # core: the GPU checks need it; media: vita's audio/video/eval paths (dropped first)
    why: str


def read_spec(path: Path = SPEC) -> list[Entry]:
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 3)
        if len(parts) < 3 or parts[1] not in ("wheel", "sdist") or parts[2] not in ("core", "media"):
            raise SystemExit(f"{path}:{n}: expected 'name wheel|sdist core|media why', got {line!r}")
        out.append(Entry(parts[0], parts[1], parts[2], parts[3] if len(parts) > 3 else ""))
    return out


def canon(name: str) -> str:
    return _packaging()[1].canonicalize_name(name)


def wheel_info(path: Path) -> tuple[str, str, bool]:
    """(canonical name, version, pure) of a wheel file; pure = installs on any CPython 3 (``py3-none-any``)."""
    _, utils = _packaging()
    name, version, _, tags = utils.parse_wheel_filename(path.name)
    pure = all(t.abi == "none" and t.platform == "any" for t in tags)
    return str(name), str(version), pure


def installed_version(name: str) -> str:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        raise SystemExit(f"{name} is not installed in {sys.executable}: prepare.sh takes the kit's versions from "
                         "the environment vita's tests run in; run `make install` (or pass PY=.venv/bin/python)") from None


def _run(cmd: list[str], env: dict | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


def fetch(entries: list[Entry], kit: Path) -> dict[str, Path]:
    """One wheel per entry in ``kit`` (downloaded or built when missing); stale versions removed."""
    kit.mkdir(parents=True, exist_ok=True)
    want = {canon(e.name): installed_version(e.name) for e in entries}
    have: dict[str, Path] = {}
    for whl in sorted(kit.glob("*.whl")):
        name, version, _ = wheel_info(whl)
        if want.get(name) == version and name not in have:
            have[name] = whl
        else:
            print(f"removing {whl.name} (not in the kit at this version)")
            whl.unlink()
    missing = [e for e in entries if canon(e.name) not in have]
    pip = [sys.executable, "-m", "pip"]
    downloads = [f"{e.name}=={want[canon(e.name)]}" for e in missing if e.how == "wheel"]
    if downloads:
        plat = [a for p in PLATFORMS for a in ("--platform", p)]
        _run([*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
              "--implementation", "cp", *plat, "-d", str(kit), *downloads])
    builds = [f"{e.name}=={want[canon(e.name)]}" for e in missing if e.how == "sdist"]
    if builds:  # against this interpreter's torch (no build isolation: it would fetch a CUDA torch)
        _run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-binary", ":all:", "-w", str(kit),
              *builds], env={**os.environ, "DS_BUILD_OPS": "0"})
    have = {}
    for whl in kit.glob("*.whl"):
        name, version, pure = wheel_info(whl)
        if name in want:
            if name in have:
                raise SystemExit(f"{kit}: two wheels of {name} ({have[name].name}, {whl.name}); remove one")
            have[name] = whl
    for e in entries:
        whl = have.get(canon(e.name))
        if whl is None:
            raise SystemExit(f"{e.name}=={want[canon(e.name)]}: no wheel in {kit} after pip ran")
        if e.how == "sdist" and not wheel_info(whl)[2]:
            raise SystemExit(f"{whl.name}: built with compiled ops; the kit needs a pure wheel (DS_BUILD_OPS=0)")
    return have


def tree_bytes() -> int:
    """Bytes of the files that travel to the device besides the kit: tracked + untracked-not-ignored."""
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout
    return sum((REPO / p).stat().st_size for p in out.decode().split("\0") if p and (REPO / p).is_file())


def prepare(kit: Path, limit_mib: float) -> int:
    entries = read_spec()
    have = fetch(entries, kit)
    tree = tree_bytes()
    dropped = []
    size = {n: p.stat().st_size for n, p in have.items()}
    media = sorted((canon(e.name) for e in entries if e.role == "media"), key=lambda n: -size[n])
    while tree + sum(size.values()) > limit_mib * MIB and media:
        name = media.pop(0)
        dropped.append(have.pop(name).name)
        (kit / dropped[-1]).unlink()
        del size[name]
    total = sum(size.values())
    if tree + total > limit_mib * MIB:
        raise SystemExit(f"the kit ({total / MIB:.1f} MiB) and the tree ({tree / MIB:.1f} MiB) exceed "
                         f"{limit_mib} MiB even without its media wheels")
    role = {canon(e.name): e.role for e in entries}
    lines = [f"# {kit.name}/: the device kit (launch/device/packages.txt), for CPython 3.12 manylinux x86-64",
             f"# made by {sys.executable} (Python {sys.version.split()[0]}); bytes  wheel  role  pure|binary"]
    for name in sorted(have):
        lines.append(f"{size[name]:>10}  {have[name].name}  {role[name]}  "
                     f"{'pure' if wheel_info(have[name])[2] else 'binary'}")
    lines += [f"# kit {total} bytes ({total / MIB:.1f} MiB) in {len(have)} wheels; tree {tree / MIB:.1f} MiB; "
              f"together {(total + tree) / MIB:.1f} MiB of {limit_mib:g} MiB"]
    if dropped:
        lines.append(f"# dropped to fit: {', '.join(dropped)}")
    (kit / "MANIFEST.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def installable(kit: Path) -> list[Path]:
    """The kit's wheels whose tags the running interpreter supports."""
    tags, utils = _packaging()
    ours = set(tags.sys_tags())
    return sorted(w for w in kit.glob("*.whl") if ours & set(utils.parse_wheel_filename(w.name)[3]))


def check(site: Path | None) -> int:
    """Import what the kit provides, print the environment; 1 (with the missing names) if anything is absent."""
    import importlib
    import platform

    bad = []
    for e in read_spec():
        try:
            dist = md.distribution(e.name)
        except md.PackageNotFoundError:
            bad.append(e.name)
            continue
        top = (dist.read_text("top_level.txt") or "").split() or [e.name.replace("-", "_")]
        mods = [m for m in top if not m.startswith("_")] or top
        try:
            for m in mods:
                importlib.import_module(m)
        except Exception as exc:  # noqa: BLE001 - report any import failure by name
            bad.append(f"{e.name} ({type(exc).__name__}: {exc})")
            continue
        where = "kit" if site and Path(str(dist.locate_file(""))).resolve() == site.resolve() else "environment"
        print(f"  {e.name:24} {dist.version:12} {e.role:6} from {where}: {dist.locate_file('')}")
    import torch

    print(f"python {platform.python_version()} ({sys.executable}), torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"device {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}")
    for name in ("transformers", "peft", "accelerate", "tokenizers", "safetensors", "numpy", "triton", "flash-attn",
                 "liger-kernel"):
        try:
            print(f"  {name:24} {md.version(name)}")
        except md.PackageNotFoundError:
            print(f"  {name:24} (absent)")
    try:
        importlib.import_module("vita.run")
        importlib.import_module("vita.bench.gpu")
    except Exception as exc:  # noqa: BLE001
        bad.append(f"vita ({type(exc).__name__}: {exc})")
    if bad:
        print(f"missing or broken: {', '.join(bad)}")
        return 1
    print("every package of the kit imports")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("prepare", "installable", "check"))
    ap.add_argument("--kit", type=Path, default=REPO / ".whl", help="the kit's folder (default: .whl)")
    ap.add_argument("--site", type=Path, default=None, help="check: the folder the kit was installed into")
    ap.add_argument("--limit-mib", type=float, default=60.0, help="kit + travelling tree, at most (MiB)")
    a = ap.parse_args(argv)
    if a.command == "prepare":
        return prepare(a.kit, a.limit_mib)
    if a.command == "check":
        return check(a.site)
    if not (a.kit / "MANIFEST.txt").is_file():
        raise SystemExit(f"{a.kit}/MANIFEST.txt is missing: run launch/device/prepare.sh first (here, with network)")
    print("\n".join(str(w) for w in installable(a.kit)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
