"""Evaluation during training: the ``data.eval`` sets every ``train.eval_every`` steps, as loop hooks.

:func:`eval_hooks` (called by ``vita.run`` before the trainer starts, so a broken eval set fails before
any step) returns an :class:`EvalHook` and, with ``train.keep_best``, a :class:`KeepBestHook`; the
trainer calls them through the contract of :mod:`vita.engine.hooks`. Results go to every metrics sink
as ``eval/<set>/<metric>`` (console, ``metrics.jsonl``, wandb, tensorboard) and onto the run's plot;
``train.keep_best=<set>/<metric>`` marks the checkpoint of the best value as ``checkpoints/best``
(``train.keep_last`` pruning never deletes it).
"""

from __future__ import annotations

import logging
from pathlib import Path

from vita.artefacts import read_best
from vita.engine.hooks import Hook
from vita.eval.metrics import better
from vita.eval.runner import evaluate_set
from vita.eval.sets import EvalSet, check_speech, load_eval_sets

log = logging.getLogger("vita")


class _Ctx:
    """What :func:`~vita.eval.runner.evaluate_set` needs, around the training model."""

    def __init__(self, model, tokenizer, processor) -> None:
        from vita.infer.generate import stop_sequences

        self.model, self.tokenizer, self.processor = model, tokenizer, processor
        self.stop = stop_sequences(tokenizer, processor.template.end)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad or 0)


def eval_hooks(cfg, model, tokenizer, dist_info, ckpt_root: Path) -> list[Hook]:
    """The in-loop evaluation hooks of ``cfg`` (none without ``data.eval`` sets); loads and checks every set now."""
    if not cfg.data.get("eval"):
        return []
    from vita.data import make_processor, resolve_spec

    spec = resolve_spec(cfg.data, tokenizer, model.data_spec() if model.has_data_spec else None)
    proc = make_processor(cfg.data, tokenizer, spec)
    sets = load_eval_sets(cfg.data, proc)
    check_speech(sets, model)
    ev = EvalHook(cfg, _Ctx(model, tokenizer, proc), sets, dist_info)
    return [ev, KeepBestHook(ev, cfg, dist_info, ckpt_root)] if cfg.train.keep_best else [ev]


class EvalHook(Hook):
    """Runs the eval sets at the configured steps; :attr:`results` holds the last step's (empty when it did not run)."""

    name = "eval"

    def __init__(self, cfg, ctx: _Ctx, sets: list[EvalSet], dist_info) -> None:
        self.cfg, self.ctx, self.sets, self.dist = cfg, ctx, sets, dist_info
        self.every, self.at_start = int(cfg.train.eval_every), bool(cfg.train.eval_at_start)
        self.results: dict[str, float] = {}

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

    def _maybe_run(self, trainer, start: bool) -> None:
        self.results = {}
        if not self.due(trainer.step, trainer.total_steps, start):
            return
        self.results = self.run(trainer.step)
        trainer.metrics.log(trainer.step, self.results)
        if self.dist.is_main:
            log.info("eval step %d  %s", trainer.step, "  ".join(f"{k[5:]} {v:.4g}" for k, v in self.results.items()))

    def before_train(self, trainer) -> None:
        self._maybe_run(trainer, start=True)  # train.eval_at_start

    def after_step(self, trainer) -> None:
        self._maybe_run(trainer, start=False)


class KeepBestHook(Hook):
    """``train.keep_best=<set>/<metric>``: after an evaluation with a better value, that step's checkpoint
    becomes ``checkpoints/best``. Its state is the best record it writes beside the checkpoints (read back
    at start), so a resume from a checkpoint older than the last mark still knows the best value."""

    name = "keep_best"

    def __init__(self, evaluation: EvalHook, cfg, dist_info, ckpt_root: Path) -> None:
        self.eval, self.cfg, self.dist, self.ckpt_root = evaluation, cfg, dist_info, ckpt_root
        self.keep_best = str(cfg.train.keep_best)
        self.best: float | None = None

    def before_train(self, trainer) -> None:
        saved = read_best(self.ckpt_root)
        if saved is not None and saved.get("metric") == self.keep_best:
            self.best = float(saved["value"])

    def after_step(self, trainer) -> None:
        from vita.engine import checkpoint as ckpt

        value = self.eval.results.get(f"eval/{self.keep_best}")
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
