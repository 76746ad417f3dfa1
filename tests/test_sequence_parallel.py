"""Sequence parallelism (engine.sequence_parallel, vita/model/sequence_parallel.py) on two gloo ranks.

One torchrun job (tests/dist_sp.py) computes every model-level case: text, image, video and audio samples,
unpacked (with padding) and packed, an odd length the cut pads, the chunked loss, gradient checkpointing
and DeepSpeed's TiledMLP; the group's summed shares must give the plain loss and gradients. The training
runs (vita.run) compare whole trajectories: world 1 vs two ranks at SP=2.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import ROOT, TORCHRUN, _free_port, vita_env

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.fixture(scope="module")
def model_cases(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("sp_model")
    cmd = [TORCHRUN, "--nproc_per_node", "2", "--master_port", str(_free_port()), "tests/dist_sp.py"]
    proc = subprocess.run(cmd, cwd=ROOT, env=vita_env(PYTHONPATH=str(ROOT), VITA_RESULT_DIR=str(out)),
                          capture_output=True, text=True, timeout=600)
    results = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    assert len(results) == 2, f"rc {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return results


CASES = [f"{k}-{p}" for k in ("text", "image", "video", "audio") for p in ("unpacked", "packed")] + [
    "text-odd-length", "image-chunked-loss", "audio-grad-ckpt", "video-ckpt-tiled-mlp"]


@pytest.mark.parametrize("case", CASES)
def test_sp2_equals_plain(model_cases, case):
    """Loss (the same global token mean) and every gradient within 1e-5; each rank held about half the tokens."""
    for rank, res in enumerate(model_cases):
        r = res[case]
        assert r["tokens_sp"] == r["tokens_ref"], r
        assert abs(r["loss_sp"] - r["loss_ref"]) < 1e-5, (rank, r)
        assert r["grad_diff"] < 1e-5, (rank, r)
        assert 0 < r["share"] < r["tokens_ref"], (rank, r)  # a share, not the whole sequence
        if not case.startswith("text"):
            assert r["encoder_grads"] > 0, r  # the media reached the loss
