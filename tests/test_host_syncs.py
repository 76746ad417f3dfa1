"""No host syncs per micro-batch: a training step reads device tensors (``.item()``, ``float()``,
``int()``, ``bool()``, ``.tolist()``, ...) a fixed number of times per optimizer step, however many
micro-batches it accumulates.

There is no GPU here, so "device" tensors are simulated: a ``TorchFunctionMode`` marks the model's
parameters and buffers and every tensor the engine moves to its device (``Tensor.to`` returns a
marked copy, as a real transfer does), propagates the mark to every op's outputs, and counts reads
of marked tensors. The host batch from the loader stays unmarked: reading it costs no sync.
"""

from __future__ import annotations

import tempfile
import traceback
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

READS = {torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__,
         torch.Tensor.__index__, torch.Tensor.tolist, torch.Tensor.numpy}
MARK = "_vita_on_device"


def _on_device(t) -> bool:
    return isinstance(t, torch.Tensor) and getattr(t, MARK, False)


def _mark(t) -> None:
    if isinstance(t, torch.Tensor):
        try:
            setattr(t, MARK, True)
        except (AttributeError, RuntimeError):
            pass


class DeviceReads(TorchFunctionMode):
    """Counts reads of (simulated) device tensors; ``reads`` holds where each happened."""

    def __init__(self, host: list[torch.Tensor]) -> None:
        super().__init__()
        self.host = {id(t) for t in host}
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in READS and args and _on_device(args[0]):
            frame = next((f for f in reversed(traceback.extract_stack()[:-1]) if "/vita/" in f.filename), None)
            self.reads.append(f"{func.__name__} at {frame.filename.split('/vita/')[-1]}:{frame.lineno}" if frame
                              else func.__name__)
        out = func(*args, **kwargs)
        if func is torch.Tensor.to and args and id(args[0]) in self.host:
            out = out.clone() if out is args[0] else out  # a transfer makes a new (device) tensor
            _mark(out)
        elif func not in READS and any(_on_device(t) for t in tree_flatten((args, kwargs))[0]):
            for t in tree_flatten(out)[0]:
                _mark(t)
        return out


@pytest.fixture(scope="module")
def reads_per_step():
    """Device reads of one optimizer step of tiny_omni on the demo data, with 1 and with 3 micro-batches."""
    from tests.data_fixtures import omni_demo, samples_by_kind
    from vita.bench.harness import init_single_process
    from vita.engine.engine import Trainer
    from vita.stage import apply_stage

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for accum in (1, 3):
            cfg, tokenizer, model, data = omni_demo(["engine=zero0", "engine.micro_batch_size=2",
                                                     f"engine.grad_accum={accum}", "train.max_steps=3"])
            dist_info = init_single_process(cfg)
            lrs = apply_stage(model, cfg.stage, cfg.optim.lr)
            if not out:
                by_kind = samples_by_kind(data.dataset)
            pairs = [("image", "audio"), ("video", "text"), ("audio", "image")][:accum]
            mbs = [data.loader.collate([by_kind[a], by_kind[b]]) for a, b in pairs]  # media in every micro-batch
            batches = [mbs, mbs]
            trainer = Trainer(cfg, model, data, tokenizer, dist_info, Path(tmp) / f"a{accum}", lrs)
            try:
                trainer.train_step(batches[0])  # warm-up (lazy inits)
                for p in [*model.parameters(), *model.buffers()]:
                    _mark(p)
                host = [v for mb in batches[1] for v in mb.values() if isinstance(v, torch.Tensor)]
                kinds = {k for mb in batches[1] for k in mb}
                with DeviceReads(host) as mode:
                    metrics = trainer.train_step(batches[1])
                out[accum] = (mode.reads, metrics, kinds)
            finally:
                trainer.close()

    from vita.engine.distributed import end_process_group

    end_process_group()  # later tests (in-process or subprocesses) start their own group
    return out


def test_device_reads_do_not_grow_with_micro_batches(reads_per_step):
    """The same reads with 3 micro-batches as with 1 (so none per micro-batch), media batches included."""
    one, _, kinds1 = reads_per_step[1]
    three, metrics, kinds3 = reads_per_step[3]
    assert {"pixel_values", "audio_features"} <= kinds1 & kinds3, "the steps should carry image/video and audio"
    assert torch.isfinite(torch.tensor(metrics["loss"])) and metrics["grad_norm"] > 0
    assert len(three) == len(one), f"per-micro-batch device reads: 1 mb -> {one}, 3 mbs -> {three}"
    assert len(one) <= 4, one  # the step's loss, its finite flags, and the gradient norm


def test_the_counter_sees_a_per_micro_batch_read(reads_per_step, monkeypatch):
    """The check can fail: a float() of the loss in the model's forward (per micro-batch) is counted."""
    x = torch.ones(3)
    _mark(x)
    with DeviceReads([]) as mode:
        float(x.sum())
        bool((x * 2).any())
        x.tolist()
        int(torch.ones(1).sum())  # host tensor: not a sync
    assert len(mode.reads) == 3, mode.reads
