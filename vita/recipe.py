"""Run a recipe: stages in order, each starting from the previous stage's export.

``python -m vita.run experiment=<recipe>`` where the experiment sets ``recipe:`` (a list of
``{stage, name, overrides}``). Each step composes the same command line plus ``stage=<stage>``,
its own overrides and ``stage.init_from`` = the previous step's ``final/``, and trains in
``<run dir>/<k>_<name>``. A step already complete is skipped, so re-running the command continues
where it stopped. A failure stops the recipe with a message naming the step.

A codec step (``stage.task: codec``, stage 3.1) exports no model: the steps after it start from the export
before it, and a later step whose model speaks with that codec but names no ``model.speech.codec_path`` gets
the codec the step fitted (``<k>_<name>/final/codec``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vita.artefacts import final_of
from vita.cli import override_key
from vita.config import validate
from vita.errors import VitaError

log = logging.getLogger("vita")


def step_overrides(cli: list[str], step) -> list[str]:
    """The overrides that compose one step's config (``stage.init_from`` is set after composing)."""
    keep = [o for o in cli if not override_key(o).startswith(("stage", "recipe"))]
    return [*keep, f"stage={step.stage}", *step.overrides, "recipe=[]"]


def run_recipe(cfg: DictConfig, train: Callable[[DictConfig, Path], dict]) -> dict:
    """Train every step of ``cfg.recipe``; returns the last step's metrics."""
    hc = HydraConfig.get()
    root = Path(hc.runtime.output_dir)
    cli = list(hc.overrides.task)
    prev: str | None = cfg.stage.init_from
    codec: str | None = None  # the last codec step's fitted codec folder
    metrics: dict = {}
    n = len(cfg.recipe)
    for k, step in enumerate(cfg.recipe, start=1):
        name = step.name or step.stage
        run_dir = root / f"{k}_{name}"
        log.info("recipe step %d/%d: %s (stage %s) in %s", k, n, name, step.stage, run_dir)
        try:
            step_cfg = compose(config_name=hc.job.config_name, overrides=step_overrides(cli, step))
            if prev:  # set directly: a run dir path may hold characters the override grammar rejects
                step_cfg.stage.init_from = prev
            if codec and step_cfg.model.speech.codec and not step_cfg.model.speech.codec_path:
                step_cfg.model.speech.codec_path = codec
            validate(step_cfg)
            metrics = train(step_cfg, run_dir) or metrics
        except VitaError as e:
            raise VitaError(f"recipe stopped at step {k}/{n} '{name}' (stage {step.stage}): {e}") from e
        except Exception:  # a bug: its traceback stays (one line is for user errors), after the step it hit
            log.error("recipe stopped at step %d/%d '%s' (stage %s) by a bug; its traceback follows", k, n, name,
                      step.stage)
            raise
        if step_cfg.stage.task == "codec":
            from vita.codec_stage import CODEC_DIR

            codec = str(final_of(run_dir) / CODEC_DIR)
        else:
            prev = str(final_of(run_dir))
    return metrics
