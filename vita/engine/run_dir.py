"""The run dir: one per job, stable across restarts so that re-running a command resumes it."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vita.artefacts import COMPLETE_FILE, CONFIG_FILE, checkpoints_of
from vita.engine.checkpoint import find_resumable
from vita.engine.distributed import DistInfo, broadcast_object
from vita.errors import ConfigError

# Keys that may change between a run and its resumption (length, logging, housekeeping).
RESUMABLE_CHANGES = ("train.max_steps", "train.epochs", "train.resume", "train.resume_from", "train.ckpt_every",
                     "train.keep_last", "train.log_every",
                     "train.eval_every", "train.eval_at_start", "train.keep_best", "data.eval", "logging.", "data.num_workers", "engine.timeout_min", "slurm.")


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(old: dict, new: dict) -> list[str]:
    """Keys whose values differ, leaving out those a resumed run may change."""
    a, b = _flat(old), _flat(new)
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys
            if a.get(k) != b.get(k) and not k.startswith(RESUMABLE_CHANGES)]


def prepare_run_dir(run_dir: Path, cfg: DictConfig, dist_info: DistInfo) -> str:
    """Check the run dir against this config; returns ``new``, ``resume`` or ``complete``.

    Raises:
        ConfigError: the dir holds a run with another config, or ``train.resume=never`` and it is used.
    """
    state = None
    if dist_info.is_main:
        state = _inspect(run_dir, cfg)
    state = broadcast_object(state)
    if isinstance(state, str) and state.startswith("error:"):
        raise ConfigError(state.removeprefix("error:"))
    return state


def _inspect(run_dir: Path, cfg: DictConfig) -> str:
    current = OmegaConf.to_container(cfg, resolve=True)
    saved = run_dir / CONFIG_FILE
    ckpts = checkpoints_of(run_dir)
    used = ckpts.is_dir() and any(ckpts.iterdir())
    if used and cfg.train.resume == "never" and not cfg.train.resume_from:
        return f"error:run dir {run_dir} already holds checkpoints and train.resume=never; pick another name= or delete it"
    if saved.is_file() and used:
        diff = config_diff(json.loads(saved.read_text()), current)
        if diff:
            return ("error:run dir " + str(run_dir) + " holds a run with a different config (" + "; ".join(diff[:5]) +
                    "); use another name= to start a new run, or restore those values to resume")
    done = run_dir / COMPLETE_FILE
    if done.is_file() and json.loads(done.read_text()).get("max_steps") == cfg.train.max_steps:
        print(f"run {run_dir} is already complete; nothing to do (use another name= for a new run)", flush=True)
        return "complete"
    if used:
        find_resumable(ckpts)  # raise now if nothing is usable
    run_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(current, indent=1))
    return "resume" if used else "new"


def mark_complete(run_dir: Path, cfg: DictConfig, step: int) -> None:
    (run_dir / COMPLETE_FILE).write_text(json.dumps({"step": step, "max_steps": cfg.train.max_steps}))
