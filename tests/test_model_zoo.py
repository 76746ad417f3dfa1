"""Every vision tower, audio encoder and projector, in its tiny form: builds on CPU, right output
shape, finite values, and backward reaches trainable parameters only."""

from __future__ import annotations

import re

import pytest
import torch

from vita.model.projectors import build_projector
from vita.registry import AUDIO_ENCODERS, PROJECTORS, VISION_TOWERS, load_builtins

load_builtins()

TINY_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=56)
TINY_AUDIO = {"vita": dict(d=32, heads=2, ffn=64, layers=2),
              "whisper": dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                              max_source_positions=100)}
# Parameters that legitimately get no gradient: layers after the selected one (SigLIP/CLIP use
# layer -2), pooling heads, and Whisper's fixed positions (frozen by transformers).
UNUSED = re.compile(r"post_layernorm|\.head\.|layers?\.1\.|embed_positions")


def _tower(name: str, **kw):
    return VISION_TOWERS.build(name, **kw) if name.startswith("tiny-") else VISION_TOWERS.build(name, **TINY_TOWER, **kw)


def _check_grads(module: torch.nn.Module, frozen_prefix: str) -> None:
    for n, p in module.named_parameters():
        if n.startswith(frozen_prefix):
            assert p.grad is None, f"frozen {n} got a gradient"
        elif p.requires_grad and not UNUSED.search(n):
            assert p.grad is not None, f"trainable {n} got no gradient"
            assert torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("name", VISION_TOWERS.names())
def test_every_vision_tower(name):
    """Tiny tower: [N, 3, S, S] -> [N, num_tokens, hidden_size], finite; frozen embeddings get no grad."""
    torch.manual_seed(0)
    tower = _tower(name)
    assert len(tower.image_mean) == len(tower.image_std) == 3
    x = torch.randn(2, 3, tower.image_size, tower.image_size)
    first = next(n for n, _ in tower.named_parameters()).rsplit(".", 1)[0]
    for n, p in tower.named_parameters():
        if n.startswith(first):
            p.requires_grad_(False)
    y = tower(x)
    assert y.shape == (2, tower.num_tokens(), tower.hidden_size)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    _check_grads(tower, first)
    assert tower(tower.dummy_inputs()).shape == (1, tower.num_tokens(), tower.hidden_size)


def test_internvit_shapes_per_tile():
    """InternViT's pixel shuffle: 448 px / patch 14 = 32 x 32 -> 256 tokens x 4 x width."""
    tower = VISION_TOWERS.build("internvit", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                num_attention_heads=2)
    assert tower.image_size == 448 and tower.num_tokens() == 256 and tower.hidden_size == 128
    assert tower.image_mean == (0.485, 0.456, 0.406)


def test_pixel_shuffle_layout():
    """Each output token holds its 2x2 block: row offset, then column offset, then channel."""
    from vita.model.vision import pixel_shuffle

    grid = torch.arange(16.0).reshape(1, 16, 1)  # 4x4 grid, value = row * 4 + col
    out = pixel_shuffle(grid)
    assert out.shape == (1, 4, 4)
    assert out[0, 0].tolist() == [0, 1, 4, 5] and out[0, 1].tolist() == [2, 3, 6, 7]
    assert out[0, 2].tolist() == [8, 9, 12, 13]


def test_siglip_s2_concatenates_scales():
    """S2: three scales -> the base grid, channels x 3; the pipeline feeds the largest size."""
    tower = VISION_TOWERS.build("tiny-siglip", use_s2=True)
    assert tower.image_size == 168 and tower.hidden_size == 96
    y = tower(torch.randn(1, 3, 168, 168))
    assert y.shape == (1, 16, 96) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", AUDIO_ENCODERS.names())
def test_every_audio_encoder(name):
    """Tiny encoder: padded clips -> [A, T', hidden], num_tokens matches each clip's valid length."""
    torch.manual_seed(0)
    enc = AUDIO_ENCODERS.build(name) if name.startswith("tiny-") else AUDIO_ENCODERS.build(name, **TINY_AUDIO[name])
    assert enc.feature in ("fbank", "whisper") and enc.n_mels == 80
    x, lengths = torch.randn(2, 120, enc.n_mels), torch.tensor([120, 64])
    y, out_len = enc(x, lengths)
    assert y.shape[0] == 2 and y.shape[-1] == enc.hidden_size
    assert out_len.tolist() == [enc.num_tokens(120), enc.num_tokens(64)]
    assert y.shape[1] >= enc.num_tokens(120)
    assert torch.isfinite(y).all()
    first = next(n for n, p in enc.named_parameters() if p.requires_grad).rsplit(".", 1)[0]
    for n, p in enc.named_parameters():
        if n.startswith(first):
            p.requires_grad_(False)
    y[0, : out_len[0]].square().mean().backward()
    _check_grads(enc, first)
    dx, dl = enc.dummy_inputs()
    assert enc(dx, dl)[0].shape[-1] == enc.hidden_size


def test_vita_audio_token_count_formula():
    """VITA-1.5's count: a = (T-1)//2, b = (a-1)//2, tokens = ceil(b/2) (encoder x subsampling adapter)."""
    enc = AUDIO_ENCODERS.build("tiny-vita")
    proj = build_projector("subsampling", enc.hidden_size, 16)
    for t in (9, 57, 400, 1001):
        a = (t - 1) // 2
        b = (a - 1) // 2
        assert proj.num_tokens(enc.num_tokens(t)) == -(-b // 2)
        y, n = enc(torch.randn(1, t, 80), torch.tensor([t]))
        assert proj(y).shape[1] == proj.num_tokens(int(n[0]))


@pytest.mark.parametrize("name", PROJECTORS.names() + ["mlp3x_gelu"])
def test_every_projector(name):
    """Projector: [N, 16, in] (a 4x4 grid) -> [N, num_tokens(16), out], finite, gradients reach every weight."""
    torch.manual_seed(0)
    in_dim = 32
    out_dim = in_dim if name == "identity" else 48
    proj = build_projector(name, in_dim, out_dim)
    x = torch.randn(2, 16, in_dim, requires_grad=True)
    y = proj(x)
    assert y.shape == (2, proj.num_tokens(16), out_dim)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None
    for n, p in proj.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert proj(proj.dummy_inputs()).shape[-1] == out_dim


def test_mlp2x_gelu_layout():
    """mlp2x_gelu = Linear(in, out) -> GELU -> Linear(out, out); mlpNx adds N-1 GELU+Linear pairs."""
    p = build_projector("mlp2x_gelu", 8, 6)
    assert [type(m).__name__ for m in p.layers] == ["Linear", "GELU", "Linear"]
    assert len(build_projector("mlp4x_gelu", 8, 6).layers) == 7


@pytest.mark.parametrize("chunk", [0, 4])
def test_vita_audio_chunked_attention_is_causal_across_chunks(chunk):
    """chunk_size > 0: frames of the first chunk ignore later audio; 0 = full context (they see it)."""
    torch.manual_seed(0)
    enc = AUDIO_ENCODERS.build("tiny-vita", chunk_size=chunk, dropout=0.0).eval()
    x = torch.randn(1, 120, 80)
    y = x.clone()
    y[:, 80:] += 5.0  # change only late frames
    with torch.no_grad():
        a, _ = enc(x, torch.tensor([120]))
        b, _ = enc(y, torch.tensor([120]))
    same = torch.allclose(a[:, :4], b[:, :4], atol=1e-5)
    assert same == (chunk > 0)
    # padding never leaks: a shorter clip padded with noise gives the same valid frames
    z = x.clone()
    z[:, 60:] = torch.randn(1, 60, 80)
    with torch.no_grad():
        c, n = enc(z, torch.tensor([60]))
        d, _ = enc(x[:, :60], torch.tensor([60]))
    torch.testing.assert_close(c[:, : int(n[0])], d[:, : int(n[0])], atol=1e-5, rtol=1e-5)
