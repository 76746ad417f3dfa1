"""The layer contracts of setup.cfg (import-linter): kept by vita, and broken by a forbidden import."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PY, ROOT, vita_env

LINT = Path(PY).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess:
    # grimp finds the package on sys.path: the tree's own vita first
    return subprocess.run([str(LINT), "--no-cache"], cwd=tree, env=vita_env(PYTHONPATH=str(tree)),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def copy_of_vita(tmp_path_factory) -> Path:
    tree = tmp_path_factory.mktemp("layers")
    shutil.copytree(ROOT / "vita", tree / "vita", ignore=shutil.ignore_patterns("__pycache__", "assets"))
    shutil.copy(ROOT / "setup.cfg", tree / "setup.cfg")
    return tree


def test_the_contracts_hold():
    proc = _lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize("module,line,broken", [
    ("vita/model/bad_layer.py", "from vita.engine.checkpoint import find_resumable", "vita.model is not allowed to "
     "import vita.engine"),
    ("vita/infer/bad_layer.py", "from vita.engine.distributed import all_reduce_sum", "vita.infer is not allowed to "
     "import vita.engine.distributed"),
    ("vita/engine/bad_layer.py", "import vita.eval.runner", "vita.engine is not allowed to import vita.eval"),
])
def test_a_forbidden_import_breaks_them(copy_of_vita, module, line, broken):
    """A new module that imports across a layer fails the contracts, naming the import."""
    bad = copy_of_vita / module
    bad.write_text(f'"""A module that breaks a layer."""\n\n{line}  # noqa: F401\n')
    try:
        proc = _lint(copy_of_vita)
    finally:
        bad.unlink()
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert broken in proc.stdout.replace("\n", " "), proc.stdout[-3000:]
    assert module.removesuffix(".py").replace("/", ".") in proc.stdout
