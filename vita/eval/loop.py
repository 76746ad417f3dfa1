"""Evaluation during training: the ``data.eval`` sets every ``train.eval_every`` steps.

The engine makes one :class:`InLoopEval` at start (so a broken eval set fails before any step)
and calls :meth:`InLoopEval.maybe_run` before the first step and after every step. Results go
to every metrics sink as ``eval/<set>/<metric>`` (console, ``metrics.jsonl``, wandb, tensorboard)
and onto the run's plot; ``train.keep_best=<set>/<metric>`` marks the checkpoint of the best
value as ``checkpoints/best`` (``train.keep_last`` pruning never deletes it).
"""

from __future__ import annotations

import logging
from pathlib import Path

from vita.artefacts import read_best
from vita.eval.metrics import better
from vita.eval.runner import evaluate_set
from vita.eval.sets import EvalSet, load_eval_sets

log = logging.getLogger("vita")


class _Ctx:
    """What :func:`~vita.eval.runner.evaluate_set` needs, around the training model."""

    def __init__(self, model, tokenizer, processor) -> None:
        from vita.infer.generate import stop_sequences

        self.model, self.tokenizer, self.processor = model, tokenizer, processor
        self.stop = stop_sequences(tokenizer, processor.template.end)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad or 0)


def build_evaluator(cfg, model, tokenizer, dist_info, ckpt_root: Path) -> InLoopEval | None:
    """The in-loop evaluator of ``cfg`` (None without ``data.eval`` sets); loads and checks every set now."""
    if not cfg.data.get("eval"):
        return None
    from vita.data import make_processor, resolve_spec

    spec = resolve_spec(cfg.data, tokenizer, model.data_spec() if model.has_media else None)
    proc = make_processor(cfg.data, tokenizer, spec)
    sets = load_eval_sets(cfg.data, proc)
    return InLoopEval(cfg, _Ctx(model, tokenizer, proc), sets, dist_info, ckpt_root)


class InLoopEval:
    """Runs the eval sets at the configured steps and tracks ``train.keep_best``."""

    def __init__(self, cfg, ctx: _Ctx, sets: list[EvalSet], dist_info, ckpt_root: Path) -> None:
        self.cfg, self.ctx, self.sets, self.dist, self.ckpt_root = cfg, ctx, sets, dist_info, ckpt_root
        self.every, self.at_start = int(cfg.train.eval_every), bool(cfg.train.eval_at_start)
        self.keep_best = cfg.train.keep_best
        self.best: float | None = None
        saved = read_best(ckpt_root) if self.keep_best else None
        if saved is not None:
            if saved.get("metric") == self.keep_best:
                self.best = float(saved["value"])

    def due(self, step: int, total: int, start: bool = False) -> bool:
        """Whether to evaluate now: at step 0 with ``eval_at_start``, at multiples of ``eval_every`` and the last step."""
        if start:
            return self.at_start and step == 0
        return bool(self.every) and (step % self.every == 0 or step == total)

    def run(self, step: int) -> dict[str, float]:
        """Every set, on every rank (collective); returns ``eval/<set>/<metric>`` -> value."""
        model = self.ctx.model
        was_training = model.training
        model.eval()
        out: dict[str, float] = {}
        # a bar per set on rank 0 (generation on CPU takes a while): the run never looks stuck
        progress = self.dist.is_main and bool(self.cfg.logging.progress_bar)
        if self.dist.is_main:
            log.info("eval step %d: %s", step, ", ".join(f"{es.name} ({len(es)}, {'+'.join(es.metrics)})"
                                                        for es in self.sets))
        try:
            for es in self.sets:
                metrics, _ = evaluate_set(self.ctx, es, self.dist.rank, self.dist.world_size,
                                          lockstep=self.dist.world_size > 1, progress=progress)
                out.update({f"eval/{es.name}/{k}": v for k, v in metrics.items() if k != "samples"})
        finally:
            model.train(was_training)
        return out

    def maybe_run(self, trainer, start: bool = False) -> dict[str, float]:
        """Called by the engine before the first step (``start``) and after each step."""
        if not self.due(trainer.step, trainer.total_steps, start):
            return {}
        results = self.run(trainer.step)
        trainer.metrics.log(trainer.step, results)
        if self.dist.is_main:
            log.info("eval step %d  %s", trainer.step, "  ".join(f"{k[5:]} {v:.4g}" for k, v in results.items()))
        if self.keep_best and not start:
            self._keep_best(trainer, results)
        return results

    def _keep_best(self, trainer, results: dict[str, float]) -> None:
        from vita.engine import checkpoint as ckpt

        value = results.get(f"eval/{self.keep_best}")
        if value is None or not better(self.keep_best.split("/", 1)[1], value, self.best):
            return
        self.best = value
        tag = ckpt.tag_for(trainer.step)
        if not (self.ckpt_root / tag).is_dir():
            trainer.save()
        if self.dist.is_main:
            ckpt.mark_best(self.ckpt_root, tag, {"metric": self.keep_best, "value": value, "step": trainer.step})
            ckpt.prune(self.ckpt_root, self.cfg.train.keep_last)  # the previous best may go now
            log.info("best %s = %.4g at step %d: checkpoints/%s kept", self.keep_best, value, trainer.step, tag)


PROMPT_KEYS = ("template", "system_prompt", "max_length", "min_tiles", "max_tiles", "use_thumbnail",
               "image_aspect_ratio", "min_frames", "max_frames", "video_fps", "dither", "state_tokens", "vita_layout",
               "media_spec")


def prompt_settings(data_cfg) -> dict:
    """The ``cfg.data`` keys that shape prompts (template, tiling, frames, state tokens ...), for an export."""
    return {k: data_cfg.get(k) for k in PROMPT_KEYS}
