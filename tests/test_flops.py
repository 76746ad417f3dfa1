"""FLOPs accounting (vita.engine.flops) against torch's own FlopCounterMode on tiny models.

Tolerance: 5% (measured: within 3%). Not exact because the formula counts biases and norm weights
as matmul weights, the first conv's input gradient (never computed), and not VITA's relative-position
projections. The LLM runs eager attention here: FlopCounterMode does not count the CPU SDPA kernel,
so with ``sdpa`` the measurement would miss the attention term. Each case fails if a term is
missing or doubled (attention, weight gradients and each encoder are each more than 5% of the total).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.test_omni import batch, make
from vita.engine.flops import StepFlops, throughput

TOL = 0.05


def measured(model, mb) -> int:
    """FLOPs torch counts for one forward + backward of ``mb``."""
    with FlopCounterMode(display=False) as fc:
        out = model(**mb)
        out["ce_sum"].backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def freeze(*modules) -> None:
    for m in modules:
        m.requires_grad_(False)


CASES = {
    "llm only, trained": (dict(tower=None, audio=None), ()),
    "omni, all trained": ({}, ()),
    "omni, encoders frozen": ({}, ("vision_tower", "audio_encoder")),
    "omni, only projectors trained": ({}, ("llm", "vision_tower", "audio_encoder")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_formula_matches_flop_counter(case):
    kw, frozen = CASES[case]
    m = make(**kw, **{"overrides": {"hidden_size": 128, "intermediate_size": 384}, "attn_implementation": "eager"})
    freeze(*(getattr(m, k) for k in frozen))
    if kw.get("tower", "x") is None:
        b = batch(m, tiles=(0, 0), clips=((), ()), length=96)
    else:
        b = batch(m, tiles=(3, 2), clips=((400,), (300,)), length=96)
    got = StepFlops(m).micro_batch(b)
    want = measured(m, b)
    assert abs(got - want) / want < TOL, f"{case}: formula {got:.4g} vs FlopCounterMode {want:.4g}"


def test_freezing_lowers_the_count_by_the_weight_gradients():
    m = make()
    b = batch(m, tiles=(2, 1), clips=((200,), ()))
    full = StepFlops(m).micro_batch(b)
    freeze(m.vision_tower)
    n_vt = sum(p.numel() for p in m.vision_tower.parameters())
    frozen = StepFlops(m).micro_batch(b)
    patches = (56 // 14) ** 2 + 1
    assert full - frozen == 4 * n_vt * 3 * patches + 8 * 2 * 32 * 3 * patches**2  # no input nor weight grads


def test_packed_sample_lengths_and_padding():
    mb = {"attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]),
          "position_ids": torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 0, 1, 2]])}
    assert StepFlops.sample_lengths(mb) == [3, 2, 3]
    del mb["position_ids"]
    assert StepFlops.sample_lengths(mb) == [5, 3]


def test_throughput_and_mfu():
    r = throughput(4e12, 2.0, 2, 10.0)
    assert r["tflops"] == pytest.approx(1.0) and r["mfu"] == pytest.approx(0.1)
    assert "mfu" not in throughput(4e12, 2.0, 2, None)


def test_training_log_reports_flops_and_mfu(out_root):
    """A short run with ``engine.peak_tflops`` logs flops_per_step, tflops and mfu = tflops / peak."""
    from tests.conftest import find_run, quiet, run_vita
    from vita.engine.metrics import read_metrics

    run_vita([*quiet("flops", out_root), "experiment=chatterbot_tiny", "train.max_steps=3", "engine.peak_tflops=0.5", "logging.loggers=[jsonl]"])
    rows = read_metrics(find_run(out_root, "flops") / "metrics.jsonl")
    assert len(rows) == 3
    for r in rows:
        assert r["flops_per_step"] > 0
        assert r["tflops"] == pytest.approx(r["flops_per_step"] / r["step_time_s"] / 1e12)
        assert r["mfu"] == pytest.approx(r["tflops"] / 0.5)
