"""Shared helpers: run ``python -m vita.run`` (or torchrun) in a subprocess and read its run dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TORCHRUN = str(Path(PY).with_name("torchrun"))


def _shares_a_run(item) -> bool:
    """Whether the test uses a module- (or class-) scoped fixture: a run or model built once for its file."""
    info = getattr(item, "_fixtureinfo", None)
    return info is not None and any(fd.scope in ("module", "class", "package")
                                    for defs in info.name2fixturedefs.values() for fd in defs)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``): a file whose tests share a module-scoped
    run stays on one worker (the run is built once), every SLURM test shares one worker (one local cluster), any
    other test goes wherever a worker is free; the long (``slow``/``distributed``/``slurm``) tests are handed out
    first, so that no worker is left with a long one at the end."""
    for item in items:
        if item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))
        elif _shares_a_run(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    long = ("slurm", "slow", "distributed")
    items.sort(key=lambda it: not any(it.get_closest_marker(m) for m in long))  # stable: file order kept within


def spawn_repl(args: list[str], log_dir: Path, timeout: float = 240):
    """``python -m ARGS`` under pexpect (a REPL), its transcript written to ``log_dir/session.log`` for failures."""
    import pexpect

    child = pexpect.spawn(PY, ["-m", *args], cwd=str(ROOT), env=vita_env(), encoding="utf-8", timeout=timeout)
    child.logfile_read = open(log_dir / "session.log", "w")  # noqa: SIM115  (closed with the child)
    return child


def speak_into(child, bad: Path, folder: Path) -> None:
    """At a ``vita.chat`` REPL prompt: ``/speak`` into a folder that cannot exist (one error line, the REPL goes on),
    then into ``folder``."""
    child.expect("you> ")
    child.sendline(f"/speak {bad}")
    child.expect(rf"error: \S*{bad.name}: the folder \S*{bad.parent.name} does not exist")
    child.expect("you> ")
    child.sendline(f"/speak {folder}")
    child.expect(r"\(speech on")


def vita_env(**extra: str) -> dict:
    env = dict(os.environ)
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):  # left by an in-process test's
        env.pop(k, None)  # process group, they would make the child join it (EADDRINUSE) instead of its own
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", WANDB_MODE="offline", WANDB_SILENT="true",
               HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_vita(args: list[str], *, world: int = 1, timeout: float = 600, check: bool = True,
             env: dict | None = None) -> subprocess.CompletedProcess:
    """Run one vita command; with ``world=2`` under torchrun on gloo. Fails with the output tail."""
    if world == 1:
        cmd = [PY, "-m", "vita.run", *args]
    else:
        cmd = [TORCHRUN, "--nproc_per_node", str(world), "--master_port", str(_free_port()), "-m", "vita.run", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env or vita_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        # gloo sometimes aborts at interpreter exit after all work is done (reference/stack.md §2);
        # accept that only when the run itself reported completion.
        if not ("run complete:" in proc.stdout and "terminate called" in proc.stderr):
            raise AssertionError(f"{' '.join(cmd)} -> rc {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
                                 f"\n--- stderr\n{proc.stderr[-5000:]}")
    return proc


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live_rglob(base: Path, name: str) -> list[Path]:
    """Files called ``name`` under ``base`` while a run writes there: unlike ``Path.rglob`` a directory that
    vanishes mid-walk (a checkpoint's ``.tmp-step_*`` renamed into place) is passed over, not an error."""
    import os

    return sorted(Path(d) / name for d, _, files in os.walk(base) if name in files)


def find_run(root: Path, name: str) -> Path:
    """The single run dir of ``name`` under ``root`` (the one holding vita_config.json)."""
    dirs = [p.parent for p in live_rglob(root / name, "vita_config.json")]
    assert len(dirs) == 1, f"expected one run dir under {root / name}, found {dirs}"
    return dirs[0]


def losses(run_dir: Path) -> list[float]:
    from vita.engine.metrics import read_metrics

    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]  # not eval-only rows (step 0)


def load_final(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "final" / "model.safetensors"))


@pytest.fixture
def out_root(tmp_path: Path) -> Path:
    return tmp_path / "outputs"


def quiet(name: str, root: Path) -> list[str]:
    """Overrides every test run uses: its own output root and name, no progress bar, no loss plot (matplotlib
    costs seconds a run; tests/test_train_runs.py checks the plot of the demo run)."""
    return [f"name={name}", f"output_root={root}", "logging.progress_bar=false", "logging.plot=false"]


def read_json(p: Path) -> dict:
    return json.loads(p.read_text())


def greedy_ids(llm, prompt_ids: list[int], n: int) -> list[int]:
    """``n`` greedy tokens after ``prompt_ids`` by plain argmax over full re-forwards (no cache, no vita code)."""
    import torch

    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(llm(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt_ids):]


def cut_at_stop(ids: list[int], stops) -> list[int]:
    """``ids`` up to the first stop sequence: what ``vita.infer.generate`` returns for those greedy tokens."""
    for i in range(len(ids)):
        if any(ids[i:i + len(st)] == list(st) for st in stops):
            return ids[:i]
    return ids
