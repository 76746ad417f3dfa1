"""Metric sinks (console, ``metrics.jsonl``, wandb, tensorboard) and the end-of-run loss plot.

Only rank 0 writes. The file sinks get every step's flat dict; the console gets a line every
``console_every`` steps (``train.log_every``) and at the last step, so the terminal stays readable.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger("vita")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


class MetricsLogger:
    """Fan out ``log(step, metrics)`` to the configured sinks."""

    CONSOLE_KEYS = ("loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "step_time_s", "tflops", "mfu")

    def __init__(self, run_dir: Path, loggers: list[str], enabled: bool, run_name: str, config: dict,
                 wandb_project: str = "vita", wandb_entity: str | None = None, console_every: int = 1) -> None:
        self.enabled = enabled
        self.console_every = max(1, console_every)
        self.loggers = set(loggers)
        self.path = run_dir / "metrics.jsonl"
        self._wandb = self._tb = None
        if not enabled:
            return
        if "wandb" in self.loggers:
            import wandb

            self._wandb = wandb.init(project=wandb_project, entity=wandb_entity, name=run_name, dir=str(run_dir),
                                     config=config, id=_stable_id(run_dir), resume="allow")
        if "tensorboard" in self.loggers:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, step: int, metrics: dict[str, Any], final: bool = False) -> None:
        """Write ``metrics`` of ``step`` to every sink; the console only every ``console_every`` steps or if ``final``."""
        if not self.enabled:
            return
        row = {"step": step, **metrics}
        if "jsonl" in self.loggers:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        # training rows only (eval rows print their own table: vita.eval.loop), every console_every steps
        if ("console" in self.loggers and any(k in metrics for k in self.CONSOLE_KEYS)
                and (step % self.console_every == 0 or final)):
            log.info("step %d  %s", step, "  ".join(f"{k} {_fmt(metrics[k])}" for k in self.CONSOLE_KEYS if k in metrics))
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _stable_id(run_dir: Path) -> str:
    import hashlib

    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]


def read_metrics(path: Path) -> list[dict]:
    """Rows of a ``metrics.jsonl``; a resumed run's rows after the resume point replace the older ones."""
    rows: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows.setdefault(row["step"], {}).update(row)  # eval rows join the step's training row
    return [rows[k] for k in sorted(rows)]


def plot_loss(metrics_path: Path, out: Path) -> Path | None:
    """Write ``loss.png`` (loss and lr against step; the ``eval/*`` metrics in a panel beside) from ``metrics.jsonl``."""
    every = read_metrics(metrics_path)
    rows = [r for r in every if "loss" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    eval_keys = sorted({k for r in every for k in r if k.startswith("eval/") and not k.endswith("/ppl")})
    if eval_keys:
        fig, (ax, ax_eval) = plt.subplots(1, 2, figsize=(12, 4))
        ax_ms = ax_eval.twinx() if any(k.endswith("_ms") for k in eval_keys) else None  # latencies: their own axis
        for i, k in enumerate(eval_keys):
            pts = [(r["step"], r[k]) for r in every if k in r]
            on = ax_ms if ax_ms is not None and k.endswith("_ms") else ax_eval
            on.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k[5:], color=f"C{i}",
                    linestyle="--" if on is ax_ms else "-")
        ax_eval.set_xlabel("step")
        ax_eval.set_title("eval")
        ax_eval.grid(alpha=0.3)
        handles = [h for a in (ax_eval, ax_ms) if a is not None for h in a.get_legend_handles_labels()[0]]
        ax_eval.legend(handles=handles, fontsize=8)
        if ax_ms is not None:
            ax_ms.set_ylabel("ms (dashed)")
    else:
        fig, ax = plt.subplots(figsize=(7, 4))
    loss = [r["loss"] for r in rows]
    ax.plot(steps, loss, color="tab:blue", alpha=0.3, linewidth=0.8)
    window = max(1, len(loss) // 50)  # a running mean over ~2% of the run
    smooth = [sum(loss[max(0, i - window + 1) : i + 1]) / len(loss[max(0, i - window + 1) : i + 1]) for i in range(len(loss))]
    ax.plot(steps, smooth, label=f"loss (mean of {window})", color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    if "lr" in rows[0]:
        ax2 = ax.twinx()
        ax2.plot(steps, [r["lr"] for r in rows], label="lr", color="tab:orange", alpha=0.6)
        ax2.set_ylabel("lr")
    ax.set_title(metrics_path.parent.name)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
