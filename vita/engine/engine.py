"""The training loop. DeepSpeed owns the math; this file owns the order of things.

``Trainer.train()`` reads top to bottom: resume, then for each step draw ``grad_accum``
micro-batches, forward -> ``engine.backward`` -> ``engine.step`` for each, log, checkpoint, run the
hooks (:mod:`vita.engine.hooks`: in-loop evaluation, keep-best), and stop (checkpoint, requeue,
exit) if SLURM has warned that the job will end. The data stream's resume state (position,
sampler, bad samples skipped) is the loader's own (``StepLoader.state_dict``).
The loss of a step is the token-mean cross-entropy over the *global* batch (all ranks, all
micro-batches), so how a batch is split never changes the trajectory.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import deepspeed
import torch
from omegaconf import OmegaConf

from vita.artefacts import checkpoints_of, final_of
from vita.data import DataBundle, Position, prompt_settings
from vita.engine import checkpoint as ckpt
from vita.engine.console import ProgressBar, run_label
from vita.engine.distributed import DistInfo, all_reduce_sum
from vita.engine.ds_config import build_ds_config
from vita.engine.export import export_model, save_speech
from vita.engine.flops import StepFlops, throughput
from vita.engine.hooks import Hook
from vita.engine.metrics import MetricsLogger, plot_loss
from vita.engine.optim import make_scheduler_factory, param_groups, warmup_steps
from vita.engine.preemption import StopSignals
from vita.engine.run_dir import mark_complete
from vita.errors import CheckpointError, VitaError
from vita.model.loss import resolve_fused_loss
from vita.model.omni import count_label_tokens
from vita.model.speech.train_step import speech_frames
from vita.stage import lora_groups

log = logging.getLogger("vita")


class NonFiniteLoss(VitaError):
    """A NaN or inf loss, or gradient, under ``train.nan_policy=stop``."""


class Trainer:
    """Runs one training job of ``cfg`` on ``model`` with ``data`` in ``run_dir``."""

    def __init__(self, cfg, model, data: DataBundle, tokenizer, dist_info: DistInfo, run_dir: Path,
                 group_lrs: dict[str, float], hooks: list[Hook] | tuple[Hook, ...] = ()) -> None:
        self.cfg, self.model, self.data, self.tokenizer = cfg, model, data, tokenizer
        self.dist, self.run_dir = dist_info, run_dir
        self.ckpt_root = checkpoints_of(run_dir)
        self.hooks = list(hooks)
        names = [h.name for h in self.hooks]
        if len(set(names)) != len(names):
            raise ValueError(f"two hooks share a name (their checkpoint state would collide): {names}")
        self.step = 0
        steps_per_epoch = data.sampler.steps_per_epoch
        self.total_steps = cfg.train.max_steps if cfg.train.max_steps > 0 else cfg.train.epochs * steps_per_epoch
        self.skipped_micro_batches = 0  # non-finite losses dropped (nan_policy=skip)
        self.skipped_steps = 0  # optimizer updates skipped for a non-finite gradient (nan_policy=skip)
        self.group_lrs = group_lrs

        if cfg.engine.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model.fused_loss = resolve_fused_loss(cfg.engine.fused_loss, cfg.engine.zero_stage)  # vita/model/loss.py
        self.sp_size = int(cfg.engine.sequence_parallel)
        if self.sp_size > 1:  # groups of N ranks share each sample (vita/model/sequence_parallel.py)
            from vita.model.sequence_parallel import SequenceParallel

            model.sequence_parallel = SequenceParallel(self.sp_size)
        if cfg.engine.tiled_mlp:
            from vita.model.tiled import tile_mlps

            tile_mlps(model.llm, int(cfg.engine.tiled_mlp))
        groups = param_groups(model.module_groups(), group_lrs, cfg.optim.weight_decay)
        sched = make_scheduler_factory(cfg.optim.scheduler, self.total_steps,
                                       warmup_steps(cfg.optim, self.total_steps), cfg.optim.min_lr_ratio)
        self.ds_config = build_ds_config(cfg.engine, cfg.optim, dist_info.world_size)
        self.engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=groups, config=self.ds_config,
                                                    lr_scheduler=sched)
        if dist_info.world_size == 1 and cfg.engine.zero_stage == 0:
            # one rank: DeepSpeed's gradient all-reduce is an identity that still flattens every gradient into a
            # bucket and copies it back (about a fifth of a ZeRO-0 step on the bench model, docs/BENCHMARKS.md)
            self.engine.enable_backward_allreduce = False
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.speaks = getattr(model, "speech_decoder", None) is not None
        if self.speaks and dist_info.is_main:  # the run's codec and decoder config, once (vita/artefacts.py)
            save_speech(model, run_dir, OmegaConf.to_container(cfg.model.speech, resolve=True))
        self.step_flops = StepFlops(model)  # model FLOPs per micro-batch (vita/engine/flops.py)
        self.stop_signals = StopSignals()  # SLURM's warning before the time limit, or SIGTERM
        self.metrics = MetricsLogger(run_dir, list(cfg.logging.loggers), dist_info.is_main, cfg.name,
                                     OmegaConf.to_container(cfg, resolve=True), cfg.logging.wandb_project,
                                     cfg.logging.wandb_entity, console_every=cfg.train.log_every)

    # -- the loop ---------------------------------------------------------------------------------
    def train(self) -> dict:
        """Train to ``total_steps`` (resuming if a checkpoint exists); returns the last metrics."""
        start = self.resume()
        for hook in self.hooks:
            hook.before_train(self)  # train.eval_at_start
        bar = self._progress_bar()
        last: dict = {}
        for position, micro_batches in self.data.loader.iterate(start):
            if self.step >= self.total_steps:
                break
            t0 = time.perf_counter()
            last = self.train_step(micro_batches)
            last["step_time_s"] = time.perf_counter() - t0
            last["tokens_per_s"] = last.pop("tokens") / last["step_time_s"]
            last["samples_per_s"] = last.pop("samples") / last["step_time_s"]
            last.update(throughput(last.pop("flops"), last["step_time_s"], self.dist.world_size,
                                   self.cfg.engine.peak_tflops))  # flops_per_step, tflops, mfu
            last["epoch"] = position.epoch
            last.update(self.data.skip_counts())  # bad samples dropped so far, per reason (this rank)
            self.step += 1
            self.data.loader.step_done(position)
            if bar is not None:
                bar.update(last)
            self.metrics.log(self.step, last, final=self.step == self.total_steps)  # console: every log_every
            if self.cfg.train.ckpt_every and self.step % self.cfg.train.ckpt_every == 0 and self.step < self.total_steps:
                self.save()
            for hook in self.hooks:
                hook.after_step(self)  # train.eval_every, train.keep_best
            signum = self.stop_signals.requested() if self.step < self.total_steps else 0
            if signum:
                self.stop(signum)
        if bar is not None:
            bar.close()
        for hook in self.hooks:
            hook.after_train(self)
        self.finish()
        return last

    def train_step(self, micro_batches: list[dict]) -> dict:
        """One optimizer step over this rank's micro-batches; returns global-batch metrics.

        Nothing here reads a device tensor per micro-batch (no host sync): counts come from the host
        batch, the loss sum and the finite flags stay on the device and are read once, at the step's
        end (``train.nan_policy=skip`` alone checks each micro-batch, to drop exactly that one)."""
        world, accum, sp = self.dist.world_size, len(micro_batches), self.sp_size
        local_tokens = sum(count_label_tokens(mb["labels"]) for mb in micro_batches)
        global_tokens = all_reduce_sum(local_tokens) / sp  # the N ranks of a sequence-parallel group hold one batch
        # DeepSpeed averages gradients over ranks and divides by grad_accum; undo both so the
        # gradient is that of (sum of token losses over the global batch) / global_tokens.
        scale = world * accum / max(global_tokens, 1.0)
        # the speech decoder's code loss: per code frame of the global batch (host counts), x its weight
        global_frames = all_reduce_sum(sum(speech_frames(mb) for mb in micro_batches)) if self.speaks else 0.0
        speech_scale = world * accum / max(global_frames, 1.0) * self.cfg.model.speech.loss_weight
        ce_total, grad_norm, bad = torch.zeros((), device=self.engine.device), None, []
        speech_total = torch.zeros((), device=self.engine.device)
        lr = self.engine.get_lr()[0]  # the lr this step uses (the scheduler moves in engine.step)
        for mb in micro_batches:
            self._check_rank_share(mb)
            batch = {k: v.to(self.engine.device, non_blocking=True) for k, v in mb.items() if isinstance(v, torch.Tensor)}
            out = self.engine(**batch, sample_ids=mb.get("ids"), host_batch=mb)  # ids name samples in model errors
            loss = out["ce_sum"] * scale + sum(out["aux"].values())
            if self.speaks:
                loss = loss + out["speech_sum"] * speech_scale
                speech_total += out["speech_sum"].detach()
            if self.cfg.train.nan_policy == "skip" and not self._all_finite(loss):
                loss = self._handle_non_finite(mb)
            else:
                bad.append(~torch.isfinite(loss.detach()))  # read once, before the update
            self.engine.backward(loss)
            if self.model.sequence_parallel is not None:
                self.model.sequence_parallel.end()
            boundary = self.engine.is_gradient_accumulation_boundary()
            if boundary and bad:
                self._check_finite_losses(bad, micro_batches)
            if boundary and self.cfg.engine.zero_stage == 0:
                grad_norm = self._grad_norm()  # ZeRO-0 with a torch optimizer reports None
                if not math.isfinite(grad_norm):  # a torch optimizer would apply it: zero it first
                    self._handle_non_finite_grad(micro_batches)
                    for p in self.trainable:  # (Adam moments still decay and weight decay applies)
                        if p.grad is not None:
                            p.grad.zero_()
            skipped_before = self.engine.skipped_steps
            self.engine.step()  # ZeRO 1-3 discard a non-finite gradient themselves and count it
            if boundary and self.engine.skipped_steps > skipped_before:
                self._handle_non_finite_grad(micro_batches)
            ce_total += out["ce_sum"].detach()
        ds_norm = self.engine.get_global_grad_norm()
        grad_norm = float(ds_norm) if ds_norm is not None else grad_norm
        speech = {"speech_loss": all_reduce_sum(float(speech_total)) / max(global_frames, 1.0),
                  "speech_frames": int(global_frames)} if self.speaks else {}
        return {**speech,
            "loss": all_reduce_sum(float(ce_total)) / max(global_tokens, 1.0),
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens": all_reduce_sum(sum(int(mb["attention_mask"].sum()) for mb in micro_batches)) / sp,
            "samples": all_reduce_sum(sum(len(mb["ids"]) for mb in micro_batches)) / sp,
            "label_tokens": int(global_tokens),
            "flops": all_reduce_sum(sum(self.step_flops.micro_batch(mb) for mb in micro_batches)) / sp,
            "nonfinite_skipped_micro_batches": self.skipped_micro_batches,
            "nonfinite_skipped_steps": self.skipped_steps,
        }

    # -- side concerns ----------------------------------------------------------------------------
    def _check_rank_share(self, mb: dict) -> None:
        """``engine.max_tokens_per_rank``: refuse a sequence whose share on one rank is longer (before the OOM)."""
        limit, length = self.cfg.engine.max_tokens_per_rank, mb["input_ids"].shape[1]
        share = -(-length // self.sp_size)
        if limit and share > limit:
            raise VitaError(
                f"micro-batch of {', '.join(mb['ids'])}: a {length}-token sequence puts {share} tokens on each rank at "
                f"engine.sequence_parallel={self.sp_size}, over engine.max_tokens_per_rank={limit}; raise "
                f"engine.sequence_parallel (to {-(-length // limit)} or more, dividing the world size) or "
                "data.max_length lower")

    def _check_finite_losses(self, bad: list[torch.Tensor], micro_batches: list[dict]) -> None:
        """``nan_policy=stop``: one read of the step's finite flags (agreed over ranks) before the update."""
        flags = torch.stack(bad).tolist()
        if all_reduce_sum(float(sum(flags))) > 0:
            mb = micro_batches[flags.index(True)] if any(flags) else micro_batches[0]
            self._handle_non_finite(mb)  # raises under nan_policy=stop

    def _all_finite(self, loss: torch.Tensor) -> bool:
        bad = 0.0 if torch.isfinite(loss).all() else 1.0
        return all_reduce_sum(bad) == 0.0

    def _handle_non_finite(self, mb: dict) -> torch.Tensor:
        if self.cfg.train.nan_policy == "stop":
            raise NonFiniteLoss(
                f"non-finite loss at step {self.step + 1} (a rank's batch: {', '.join(mb['ids'])}); "
                "set train.nan_policy=skip to drop such micro-batches, or lower optim.lr"
            )
        self.skipped_micro_batches += 1
        log.warning("step %d: non-finite loss, micro-batch %s contributes no gradient", self.step + 1, mb["ids"])
        return sum((p * 0.0).sum() for p in self.trainable)

    def _handle_non_finite_grad(self, micro_batches: list[dict]) -> None:
        """A finite loss gave a NaN/inf gradient (agreed over ranks): stop, or count the update as skipped."""
        ids = ", ".join(i for mb in micro_batches for i in mb["ids"])
        if self.cfg.train.nan_policy == "stop":
            raise NonFiniteLoss(
                f"non-finite gradient at step {self.step + 1} (the weights were not updated; this rank's batch: "
                f"{ids}); set train.nan_policy=skip to skip such steps, or lower optim.lr")
        self.skipped_steps += 1
        log.warning("step %d: non-finite gradient, optimizer update skipped (batch %s)", self.step + 1, ids)

    def _grad_norm(self) -> float:
        norms = [torch.linalg.vector_norm(p.grad.detach().float()) for p in self.trainable if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0  # one read per step

    def _progress_bar(self):
        if not (self.dist.is_main and self.cfg.logging.progress_bar):
            return None
        return ProgressBar(self.total_steps, self.step, run_label(self.cfg.name, self.run_dir))

    def client_state(self) -> dict:
        """What a checkpoint carries besides DeepSpeed's state: the loader's (position, sampler, bad samples
        skipped), the hooks' and the trainer's own counters."""
        return {"step": self.step, "stage": self.cfg.stage.name,
                "global_batch_size": self.data.sampler.global_batch_size, "world_size": self.dist.world_size,
                **self.data.loader.state_dict(),
                "hooks": {h.name: st for h in self.hooks if (st := h.state_dict())},
                # counters the metrics report cumulatively: a resumed run goes on counting from them
                "skipped": {"nonfinite_micro_batches": self.skipped_micro_batches, "nonfinite_steps": self.skipped_steps}}

    def save(self) -> Path:
        path = ckpt.save_checkpoint(self.engine, self.ckpt_root, self.step, self.client_state(),
                                    self.cfg.train.keep_last, self.dist.rank)
        log.info("checkpoint %s", path) if self.dist.is_main else None
        return path

    def resume(self) -> Position:
        """Load the checkpoint to resume (``train.resume`` / ``train.resume_from``), if any; returns the data
        position to start from."""
        path = Path(self.cfg.train.resume_from) if self.cfg.train.resume_from else None
        if path is None and self.cfg.train.resume == "auto":
            path = ckpt.find_resumable(self.ckpt_root)
        if path is None:
            return Position()
        client = ckpt.load_checkpoint(self.engine, path, self.dist.rank)
        saved_batch = client.get("global_batch_size", self.data.sampler.global_batch_size)
        if saved_batch != self.data.sampler.global_batch_size:
            raise CheckpointError(
                f"{path} was trained with a global batch of {saved_batch} (world size {client.get('world_size')}); "
                f"this run has {self.data.sampler.global_batch_size}. Keep micro_batch_size x grad_accum x world "
                "size equal to resume exactly, or start a new run (name=...)")
        start = self.data.loader.load_state_dict(client)
        self.step = int(client["step"])
        skipped = client.get("skipped", {})
        self.skipped_micro_batches = int(skipped.get("nonfinite_micro_batches", 0))
        self.skipped_steps = int(skipped.get("nonfinite_steps", 0))
        for hook in self.hooks:
            hook.load_state_dict(client.get("hooks", {}).get(hook.name, {}))
        if self.dist.is_main:
            log.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.step, start.epoch, start.step)
        return start

    def stop(self, signum: int) -> None:
        """SLURM is about to end the job: checkpoint this step, requeue (see preemption.py) and exit."""
        if not (self.ckpt_root / ckpt.tag_for(self.step)).is_dir():
            self.save()
        self.stop_signals.hand_over(signum, self.dist.rank)

    def finish(self) -> None:
        """Final checkpoint, exported model and plot."""
        if not (self.ckpt_root / ckpt.tag_for(self.step)).is_dir():
            self.save()
        meta = {"step": self.step, "stage": self.cfg.stage.name, "template": self.cfg.data.template,
                "model": OmegaConf.to_container(self.cfg.model, resolve=True), "init_from": self.cfg.stage.init_from,
                "data": prompt_settings(self.cfg.data)}  # how vita.infer builds prompts for this export
        export_model(self.model, self.tokenizer, final_of(self.run_dir), self.cfg.engine.zero_stage, self.dist.rank,
                     meta, lora=lora_groups(self.cfg.stage),
                     trainable=set(self.group_lrs) if self.cfg.stage.export == "trainable" else None)
        if self.dist.is_main:
            if self.cfg.logging.plot:
                plot_loss(self.metrics.path, self.run_dir / "loss.png")
            mark_complete(self.run_dir, self.cfg, self.step)

    def close(self) -> None:
        self.stop_signals.close()
        self.metrics.close()
        self.engine.destroy()
