"""engine.tiled_mlp (vita/model/tiled.py, DeepSpeed's TiledMLP): the same loss and gradients as the plain MLP."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from vita.config import ModelConfig
from vita.model import build_model
from vita.model.tiled import tile_mlps


def _loss_and_grads(model, ids) -> tuple[float, dict[str, torch.Tensor]]:
    out = model(input_ids=ids, labels=ids)
    out["ce_sum"].backward()
    return float(out["ce_sum"].detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("tiles,length", [(4, 64), (5, 37), (8, 3)], ids=["even", "padded", "shorter-than-tiles"])
def test_tiled_mlp_equals_plain(tiles, length, monkeypatch):
    torch.manual_seed(0)
    plain = build_model(OmegaConf.structured(ModelConfig(backbone="tiny-qwen2")), vocab_size=1024).double()
    tiled = copy.deepcopy(plain)
    assert tile_mlps(tiled.llm, tiles) == 2  # both decoder layers
    ids = torch.randint(0, 1000, (2, length), generator=torch.Generator().manual_seed(length))
    import vita.model.tiled as tiled_mod

    seen, plain_fn = [], tiled_mod._plain
    monkeypatch.setattr(tiled_mod, "_plain", lambda mlp, x: seen.append(x.shape[-2]) or plain_fn(mlp, x))
    (la, ga), (lb, gb) = _loss_and_grads(plain, ids), _loss_and_grads(tiled, ids)
    per = -(-length // tiles)
    # 2 layers x tiles in the forward ([2, per, h] each) and again in the backward (batch flattened: [2 * per, h])
    assert seen == [per] * (2 * tiles) + [2 * per] * (2 * tiles), seen
    assert abs(la - lb) < 1e-9
    assert ga.keys() == gb.keys() and any("mlp" in n for n in ga)
    assert max(float((ga[n] - gb[n]).abs().max()) for n in ga) < 1e-10
