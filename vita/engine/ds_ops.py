"""Where DeepSpeed's JIT-built CPU ops live: one folder per Python environment, built once and said so.

Every process group DeepSpeed sets up loads its ``shm_comm`` op, compiled on first use by torch's JIT
extension loader into ``$TORCH_EXTENSIONS_DIR/deepspeed_shm_comm`` (default
``~/.cache/torch_extensions/py311_cpu``: the same folder for every venv of that Python). The build commands
hold the venv's paths, so two environments (a fresh clone's ``.venv`` and another checkout's) rebuild it
in turn, about a minute each time on two cores, silently. Unless ``TORCH_EXTENSIONS_DIR`` is set,
:func:`prepare_deepspeed_ops` points it at ``<venv>/torch_extensions`` (when writable), and rank 0 says so
before a build. DeepSpeed's own "built successfully" print (every load, every rank) is not shown.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

SHM_OP = "deepspeed_shm_comm"


def extensions_dir() -> Path | None:
    """The folder torch builds JIT extensions in, once :func:`prepare_deepspeed_ops` has run (None: torch's default)."""
    d = os.environ.get("TORCH_EXTENSIONS_DIR")
    return Path(d) if d else None


def prepare_deepspeed_ops(is_main: bool) -> None:
    """Pin the JIT build folder to this environment; on rank 0 say so if the shm op is still to be built."""
    if "TORCH_EXTENSIONS_DIR" not in os.environ and os.access(sys.prefix, os.W_OK):
        os.environ["TORCH_EXTENSIONS_DIR"] = str(Path(sys.prefix) / "torch_extensions")
    d = extensions_dir()
    if is_main and d is not None and not (d / SHM_OP / f"{SHM_OP}.so").is_file():
        print(f"building DeepSpeed's {SHM_OP} op for this environment in {d / SHM_OP} (once; about a minute on two "
              "cores)", flush=True)


@contextlib.contextmanager
def no_build_prints():
    """Swallow what DeepSpeed prints (not logs) while it sets up communication: "... built successfully"."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield
