"""``python -m tests.reliability.fault_job MODE CALL <vita.run overrides>``: one training run whose
model goes wrong on its CALL-th forward on rank 0 only (test-only; production code has no hook).

MODE ``grad``: the loss stays finite but its gradient is NaN. MODE ``loss``: the loss is inf.
"""

from __future__ import annotations

import os
import runpy
import sys

import torch

from vita.model.omni import OmniModel


class _NanGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


def _patch(mode: str, call: int) -> None:
    forward = OmniModel.forward
    calls = [0]

    def faulty(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        if self.training:
            calls[0] += 1
            if calls[0] == call and int(os.environ.get("RANK", "0")) == 0:
                out["ce_sum"] = _NanGrad.apply(out["ce_sum"]) if mode == "grad" else out["ce_sum"] * float("inf")
        return out

    OmniModel.forward = faulty


if __name__ == "__main__":
    _patch(sys.argv[1], int(sys.argv[2]))
    sys.argv = [sys.argv[0], *sys.argv[3:]]
    runpy.run_module("vita.run", run_name="__main__", alter_sys=True)
