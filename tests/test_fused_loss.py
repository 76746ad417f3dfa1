"""Chunked linear + cross-entropy (vita/model/loss.py): the same loss and gradients as the plain
logits path, for every backbone family's head, with ignored tokens, the Mixtral router aux loss
and the FO user-state loss; and how ``engine.fused_loss`` resolves."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from vita.config import ModelConfig
from vita.errors import ConfigError
from vita.model import build_model
from vita.model.loss import chunked_linear_cross_entropy, resolve_fused_loss

BACKBONES = ("tiny-qwen2", "tiny-qwen2.5-fo", "tiny-mixtral", "tiny-mistral-nemo", "tiny-llama")


@pytest.mark.parametrize("recompute", [False, True])
def test_chunked_function_matches_plain_with_bias_and_ignored_rows(recompute):
    """The autograd function alone: loss and grads of hidden, weight and bias equal F.linear + F.cross_entropy
    (chunks of 3 rows over 10, a third of the targets ignored, a non-uniform upstream gradient)."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(10, 16, generator=g, requires_grad=True)
    w = torch.randn(50, 16, generator=g, requires_grad=True)
    b = torch.randn(50, generator=g, requires_grad=True)
    t = torch.randint(0, 50, (10,), generator=g)
    t[::3] = -100
    want = F.cross_entropy(F.linear(h, w, b), t, ignore_index=-100, reduction="sum")
    (want * 0.37).backward()
    ref = [x.grad.clone() for x in (h, w, b)]
    for x in (h, w, b):
        x.grad = None
    got = chunked_linear_cross_entropy(h, w, b, t, chunk_rows=3, recompute=recompute)
    (got * 0.37).backward()
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-5)
    for x, r in zip((h, w, b), ref, strict=True):
        assert torch.allclose(x.grad, r, rtol=1e-5, atol=1e-6), (x.grad - r).abs().max()
    assert ref[0][::3].abs().sum() == 0 and h.grad[::3].abs().sum() == 0  # ignored rows: no gradient
    with torch.no_grad():  # no gradient wanted: the loss alone
        assert torch.allclose(chunked_linear_cross_entropy(h, w, b, t, chunk_rows=4), want, rtol=1e-6, atol=1e-5)


def _model(backbone: str):
    torch.manual_seed(0)
    cfg = OmegaConf.structured(ModelConfig(backbone=backbone))
    m = build_model(cfg, vocab_size=1024)
    m.set_media_token_ids(1000, 1001, 1002)
    return m


def _batch(state: bool):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 900, (3, 23), generator=g)
    labels = ids.clone()
    labels[:, :6] = -100  # prompt
    labels[2, 15:] = -100  # padding tail
    mask = torch.ones_like(ids)
    mask[2, 15:] = 0
    if state:
        labels[0, 3], labels[1, 4] = -101, -102  # FO user-state labels
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


@pytest.mark.parametrize("backbone", BACKBONES)
def test_chunked_loss_equals_plain_loss_and_grads(backbone, monkeypatch):
    """OmniModel with fused_loss=chunked (chunks of 7 rows, so several) vs off: ce_sum, token count, aux
    losses (router / state) and every parameter's gradient agree within 1e-5 (fp32)."""
    import vita.model.loss as loss_mod

    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", 7 * 1024)
    m = _model(backbone)
    b = _batch(state=m.state_head is not None)
    results = {}
    for mode in ("off", "chunked"):
        m.zero_grad(set_to_none=True)
        m.fused_loss = mode
        out = m(**b)
        total = out["ce_sum"] / 40.0 + sum(out["aux"].values())
        total.backward()
        grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        results[mode] = (out, grads)
    (po, pg), (co, cg) = results["off"], results["chunked"]
    assert int(po["num_tokens"]) == int(co["num_tokens"]) > 0
    assert torch.allclose(co["ce_sum"], po["ce_sum"], rtol=1e-5, atol=1e-5)
    assert set(po["aux"]) == set(co["aux"])
    if backbone == "tiny-mixtral":
        assert "router" in co["aux"]
    if backbone == "tiny-qwen2.5-fo":
        assert "state" in co["aux"]
    for k in po["aux"]:
        assert torch.allclose(co["aux"][k], po["aux"][k], rtol=1e-5, atol=1e-6)
    assert set(pg) == set(cg) and any("lm_head" in n or "embed_tokens" in n for n in cg)
    for n, g in pg.items():
        assert torch.allclose(cg[n], g, rtol=1e-5, atol=1e-6), (n, (cg[n] - g).abs().max())


def test_fused_loss_resolves():
    """auto = chunked on CPU (ZeRO-3 included); liger without liger-kernel + GPU, or under ZeRO-3, fails with a
    one-line hint; unknown modes list the valid ones."""
    import importlib.util

    liger = torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None
    assert resolve_fused_loss("auto", 0) == ("liger" if liger else "chunked")
    assert resolve_fused_loss("auto", 3) == "chunked"
    assert resolve_fused_loss("off", 2) == "off"
    assert resolve_fused_loss("chunked", 3) == "chunked"
    with pytest.raises(ConfigError, match="ZeRO-3"):
        resolve_fused_loss("liger", 3)
    with pytest.raises(ConfigError, match="valid options"):
        resolve_fused_loss("fast", 0)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="liger-kernel"):
            resolve_fused_loss("liger", 0)


def test_a_lora_wrapped_head_falls_back_to_the_plain_loss():
    """A head that is not a plain nn.Linear (LoRA on lm_head) cannot be fused: the plain loss runs instead."""
    from vita.model.loss import lm_loss_sum

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.base, self.extra = torch.nn.Linear(8, 20), torch.nn.Linear(8, 20, bias=False)

        def forward(self, x):
            return self.base(x) + self.extra(x)

    torch.manual_seed(0)
    head, h, t = Wrapped(), torch.randn(6, 8), torch.randint(0, 20, (6,))
    want = F.cross_entropy(head(h), t, reduction="sum")
    assert torch.allclose(lm_loss_sum(h, head, t, "chunked"), want)
