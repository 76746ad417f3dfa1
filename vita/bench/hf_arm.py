"""The Hugging Face ``transformers.Trainer`` as a benchmark arm that steps on demand.

``Trainer.train()`` owns its loop, so it runs in a thread that a callback parks at the start of
every step; ``step()`` releases it for exactly one optimizer step and waits until it parks again
(or ends). Only one thread runs at a time. A step's time is therefore everything the Trainer does
between two steps: its batch fetch, forward, backward, clipping, optimizer and scheduler, callbacks
and log/save/eval checks. It trains a wrapper of the same model on the same pre-loaded batches, in
order (an IterableDataset: no shuffling), fp32, on CPU without DeepSpeed, with the optimizer and
schedule the other arms use (torch AdamW over the engine's param groups, the engine's LambdaLR),
handed in through ``optimizers=``; it clips gradients itself. As the benchmark process holds a
(world-1) process group, accelerate wraps the model in DDP; ``find_unused_parameters`` is off.
"""

from __future__ import annotations

import tempfile
import threading

import torch
from torch import nn


class _LossOnly(nn.Module):
    """OmniModel -> the ``{"loss": ...}`` the Trainer expects (token-mean cross-entropy, as the other arms)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.last_loss = float("nan")

    def forward(self, input_ids, labels, attention_mask, ids=None):  # no **kwargs: Trainer adds nothing
        out = self.model(input_ids=input_ids, labels=labels, attention_mask=attention_mask)
        loss = out["ce_sum"] / out["num_tokens"]
        self.last_loss = float(loss.detach())  # the other arms read their loss each step too
        return {"loss": loss}


class _Batches(torch.utils.data.IterableDataset):
    def __init__(self, batches: list[list[dict]]) -> None:
        self.batches = batches

    def __iter__(self):
        for (mb,) in self.batches:
            yield {k: v for k, v in mb.items() if k in ("input_ids", "labels", "attention_mask")}


class HFTrainerArm:
    """``arm.step(batch)`` runs the Trainer's next step (on its own copy of ``batches``, in the same order)."""

    def __init__(self, model: nn.Module, cfg, group_lrs: dict[str, float], batches: list[list[dict]]) -> None:
        from transformers import Trainer, TrainerCallback, TrainingArguments

        from vita.bench.harness import make_optimizer

        self._go, self._parked = threading.Semaphore(0), threading.Semaphore(0)
        self._error: BaseException | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="vita-bench-hf-")
        args = TrainingArguments(
            output_dir=self._tmp.name, per_device_train_batch_size=1, max_steps=len(batches),
            max_grad_norm=cfg.engine.grad_clip, use_cpu=True, report_to=[], save_strategy="no",
            logging_strategy="no", disable_tqdm=True, remove_unused_columns=False, dataloader_num_workers=0,
            ddp_find_unused_parameters=False, seed=cfg.train.seed)
        arm = self

        class Park(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                arm._parked.release()
                arm._go.acquire()

        self.wrapper = _LossOnly(model)
        self.trainer = Trainer(model=self.wrapper, args=args, train_dataset=_Batches(batches),
                               data_collator=lambda xs: xs[0], callbacks=[Park()],
                               optimizers=make_optimizer(model, cfg, group_lrs, len(batches)))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._wait()

    def _run(self) -> None:
        try:
            self.trainer.train()
        except BaseException as e:  # noqa: BLE001  (re-raised in the main thread)
            self._error = e
        finally:
            self._parked.release()

    def _wait(self) -> None:
        self._parked.acquire()
        if self._error is not None:
            raise RuntimeError("the HF Trainer arm failed") from self._error

    def step(self, _batch: list[dict]) -> float:
        """One Trainer step; returns the model's loss on that step's batch, measured before the update."""
        self._go.release()
        self._wait()
        return self.wrapper.last_loss

    def close(self) -> None:
        self._thread.join(timeout=60)
        self._tmp.cleanup()
