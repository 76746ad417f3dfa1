"""Rank 0's terminal during training: one progress bar, and a metrics line every ``train.log_every`` steps.

The tqdm bar keeps loss, lr and tokens/s in its postfix (ETA is the bar's own); while it is open,
console logging (and Python warnings) go through ``tqdm.write``, so a log line never splits or
repeats the bar. ``metrics.jsonl`` is not affected: it keeps every step (vita/engine/metrics.py).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path

LOGGERS = ("", "DeepSpeed", "py.warnings")  # root (Hydra's console handler), DeepSpeed's own, warnings
ROOT_NAME = "demo"  # conf/config.yaml's ``name``: what a run is called when its experiment names nothing


def run_label(name: str, run_dir: Path) -> str:
    """What the bar calls a run: ``name``, or the experiment's when ``name`` is only the root default (the demo's
    ``smol_omni_stage2`` names none), plus the step folder of a recipe step (``tiny_recipe 2_lora``)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():  # train(cfg, run_dir) called directly
        return name
    hc = HydraConfig.get()
    label = (hc.runtime.choices.get("experiment") or name) if name == ROOT_NAME else name
    if Path(hc.runtime.output_dir).resolve() != Path(run_dir).resolve():
        label += f" {Path(run_dir).name}"
    return label


class ProgressBar:
    """The training bar; ``update(metrics)`` once per step, ``close()`` at the end (logging is restored)."""

    def __init__(self, total: int, initial: int, desc: str) -> None:
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._stack = ExitStack()
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)
        self._stack.enter_context(logging_redirect_tqdm(loggers=[logging.getLogger(n) for n in LOGGERS],
                                                        tqdm_class=type(self.bar)))
        logging.captureWarnings(True)
        self._stack.callback(logging.captureWarnings, False)

    def update(self, metrics: dict) -> None:
        """Advance one step, showing the step's loss, lr and throughput."""
        post = {"loss": f"{metrics['loss']:.4f}", "lr": f"{metrics['lr']:.2e}"}
        if "tokens_per_s" in metrics:
            post["tok/s"] = f"{metrics['tokens_per_s']:.0f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        self._stack.close()
