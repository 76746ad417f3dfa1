"""Speech decoders (``SPEECH_DECODERS``: nar_ar, ctc, vita15) and the Freeze-Omni / VITA-1.5 decoder mapping."""

from __future__ import annotations

import difflib
import json

import pytest
import torch
from torch import nn

from vita.errors import ConfigError
from vita.registry import SPEECH_DECODERS, load_builtins

load_builtins()
H, V = 32, 16


def build(key: str, codebooks: int = 2, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return SPEECH_DECODERS.build(key, llm_hidden=H, codebooks=1 if key.startswith("ctc") else codebooks,
                                 codebook_size=V, **overrides)


def batch(k: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    h, e = torch.randn(2, 5, H, generator=g), torch.randn(2, 5, H, generator=g)
    codes = torch.randint(0, V, (2, 9, k), generator=g)
    return h, e, torch.tensor([5, 3]), codes, torch.tensor([6, 9])


def generated(dec, h, e, chunk=64, max_frames=24):
    out = list(dec.generate(h, e, max_frames=max_frames, chunk=chunk))
    assert all(c.dim() == 2 and c.shape[0] <= chunk for c in out)
    return torch.cat(out) if out else torch.zeros(0, dec.codebooks, dtype=torch.long)


def code_error(dec, h, e, tl, codes, cl) -> float:
    """Edit distance between generated and target frames over the target frames (0 = exact)."""
    wrong = 0
    for i in range(len(h)):
        got = [tuple(f) for f in generated(dec, h[i, :tl[i]], e[i, :tl[i]]).tolist()]
        want = [tuple(f) for f in codes[i, :cl[i]].tolist()]
        same = sum(b.size for b in difflib.SequenceMatcher(a=got, b=want, autojunk=False).get_matching_blocks())
        wrong += max(len(got), len(want)) - same
    return wrong / int(cl.sum())


SMALL = [k for k in SPEECH_DECODERS.names() if k != "vita15"]
PREFIX = dict(prefix_layers=1, input="split")       # nar_ar with Freeze-Omni's KV prefix
VARIANTS = [("nar_ar-tiny", {}), ("nar_ar-tiny", PREFIX), ("ctc-tiny", {})]


@pytest.mark.parametrize("key,extra", [(k, {}) for k in SMALL] + [("nar_ar-tiny", PREFIX), ("nar_ar", {"prefix_layers": 4})])
def test_entry_builds_finite_loss_frame_count_and_dummy_touches_all(key, extra):
    dec = build(key, **extra)
    h, e, tl, codes, cl = batch(dec.codebooks)
    loss, frames = dec(h, e, tl, codes, cl)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and loss > 0
    assert int(frames) == int(cl.sum())
    dec.zero_grad()
    dec.dummy_loss(h).backward()
    untouched = [n for n, p in dec.named_parameters() if p.grad is None]
    assert not untouched, untouched


def test_vita15_builds_at_full_size_and_gives_a_loss():
    dec = SPEECH_DECODERS.build("vita15", llm_hidden=896)
    assert dec.codebooks == 1 and dec.codebook_size == 1024 and dec.cfg.hidden == 896
    assert len(dec.nar_layers) == 4 and len(dec.layers) == 4
    codes = torch.randint(0, 1024, (1, 4, 1))
    loss, frames = dec(torch.randn(1, 3, 896), torch.randn(1, 3, 896), torch.tensor([3]), codes, torch.tensor([4]))
    assert torch.isfinite(loss) and int(frames) == 4


@pytest.mark.parametrize("key,extra", VARIANTS)
def test_padding_does_not_change_a_samples_loss(key, extra):
    dec = build(key, **extra)
    h, e, tl, codes, cl = batch(dec.codebooks)
    both, _ = dec(h, e, tl, codes, cl)
    alone = sum(dec(h[i:i + 1, :tl[i]], e[i:i + 1, :tl[i]], tl[i:i + 1], codes[i:i + 1, :cl[i]], cl[i:i + 1])[0]
                for i in range(2))
    assert torch.allclose(both, alone, rtol=1e-5, atol=1e-4), (both, alone)


def test_codebook_weights_scale_each_codebook_and_zero_removes_it():
    dec = build("nar_ar-tiny", codebooks=3)
    h, e, tl, codes, cl = batch(3)
    full, _ = dec(h, e, tl, codes, cl)
    parts = [dec(h, e, tl, codes, cl, codebook_weights=[float(i == b) for i in range(3)])[0] for b in range(3)]
    assert torch.allclose(sum(parts), full, rtol=1e-5)
    assert all(p > 0 for p in parts)
    weighted, _ = dec(h, e, tl, codes, cl, codebook_weights=[0.5, 2.0, 0.0])
    assert torch.allclose(weighted, 0.5 * parts[0] + 2.0 * parts[1], rtol=1e-5)
    dec.zero_grad()
    weighted.backward()
    grad = dec.out_fnn.weight.grad
    assert grad[2 * V:3 * V].abs().max() == 0 and grad[V:2 * V].abs().max() > 0     # codebook 2 gets no signal
    with pytest.raises(ConfigError, match="codebook_weights has 2 entries"):
        dec(h, e, tl, codes, cl, codebook_weights=[1.0, 1.0])


@pytest.mark.parametrize("key,extra", VARIANTS)
def test_streamed_generate_equals_whole(key, extra):
    dec = build(key, **extra).eval()
    h, e, tl, _, _ = batch(dec.codebooks)
    whole = generated(dec, h[0], e[0], chunk=1000)
    assert len(whole) > 0 and whole.dtype == torch.long and int(whole.max()) < V
    for chunk in (1, 3, 8):
        assert torch.equal(generated(dec, h[0], e[0], chunk=chunk), whole), chunk


@pytest.mark.parametrize("key,extra,bound", [("nar_ar-tiny", {}, 0.0), ("nar_ar-tiny", PREFIX, 0.0),
                                             ("ctc-tiny", {}, 0.5)])
def test_overfit_two_answers(key, extra, bound):
    """A tiny decoder learns the codes of 2 short answers: nar_ar reproduces them exactly (generation with its KV
    cache computes what training computes), ctc far better than untrained."""
    dec = build(key, **extra)
    h, e, tl, codes, cl = batch(dec.codebooks, seed=3)
    before = code_error(dec, h, e, tl, codes, cl)
    opt = torch.optim.AdamW(dec.parameters(), lr=1e-2)
    for _ in range(300):
        loss, frames = dec(h, e, tl, codes, cl)
        opt.zero_grad()
        (loss / frames).backward()
        opt.step()
    after = code_error(dec, h, e, tl, codes, cl)
    print(f"{key} {extra}: code error untrained {before:.3f} -> trained {after:.3f}")
    assert before > 0.5
    assert after <= bound * before, (before, after)


def test_ctc_refuses_more_than_one_codebook():
    with pytest.raises(ConfigError) as err:
        SPEECH_DECODERS.build("ctc", llm_hidden=H, codebooks=4, codebook_size=V)
    msg = str(err.value)
    assert "\n" not in msg and "gives 4" in msg and "nar_ar" in msg


def test_unknown_override_is_refused_by_name():
    with pytest.raises(ConfigError, match="hiddn"):
        build("nar_ar-tiny", hiddn=8)


def test_summary_prints_the_vita15_decoder_size(capsys):
    from vita.model.summary import main

    main(["model=vita15_qwen2p5_7b", "model.speech.decoder=vita15"])
    out = capsys.readouterr().out
    d, inner, llm, rows = 896, 9728, 3584, 1024 + 4
    layer = 4 * d * d + 3 * d * inner + 2 * d
    nar = 2 * (llm * d + d) + 4 * layer
    ar = rows * d + 4 * layer + d + (d * rows + rows)
    table = {line.split()[0]: int(line.split()[-2].replace(",", "")) for line in out.splitlines()
             if line.strip().startswith(("speech", "NAR", "AR"))}
    assert table == {"speech": nar + ar, "NAR": nar, "AR": ar}, out
    assert 110e6 < ar < 130e6     # the paper: ~120 M each


# -- Freeze-Omni / VITA-1.5 layout ------------------------------------------------------------------------------
def freeze_omni_fixture(tmp_path, dim=16, heads=2, blocks=2, linear=24, odim=10, prefix=True):
    """A checkpoint laid out as VITA-MLLM/Freeze-Omni@3e17af4 models/decoder/decoder.py (LLM2TTSCodecAR.__init__)
    builds its modules: embedding(odim + 4, idim), layers_pre_nn (blocks // 2 LlamaDecoderLayer), layers (blocks),
    norm (LlamaRMSNorm), out_fnn Linear(encoder_output_dim, odim + 4), layers_prefix when kv_cache_prefix_finetune;
    saved as llm2tts.py's get_model reads it: decoder/model.json = [idim, odim, args], decoder/final.pt."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm

    torch.manual_seed(5)
    cfg = LlamaConfig(vocab_size=odim + 4, hidden_size=dim, intermediate_size=linear, num_hidden_layers=blocks,
                      num_attention_heads=heads, max_position_embeddings=2048)
    m = nn.Module()
    m.embedding = nn.Embedding(odim + 4, dim, padding_idx=odim + 3)
    m.layers_pre_nn = nn.ModuleList(LlamaDecoderLayer(cfg, i) for i in range(blocks // 2))
    m.layers = nn.ModuleList(LlamaDecoderLayer(cfg, i) for i in range(blocks))
    m.norm = LlamaRMSNorm(dim, eps=cfg.rms_norm_eps)
    m.out_fnn = nn.Linear(dim, odim + 4)
    if prefix:
        m.layers_prefix = nn.ModuleList(LlamaDecoderLayer(cfg, i) for i in range(blocks))
    for p in m.parameters():
        nn.init.normal_(p, std=0.2)
    args = dict(idim=dim, odim=odim, transformer_attention_dim=dim, transformer_linear_units=linear,
                transformer_num_blocks=blocks, transformer_attention_heads=heads, encoder_output_dim=dim,
                kv_cache_prefix_finetune=int(prefix), encoder_criterion="ce", transformer_dropout_rate=0.0)
    folder = tmp_path / "checkpoints" / "decoder"
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps([dim, odim, args]))
    sd = m.state_dict()
    torch.save({"model": sd}, folder / "final.pt")
    return tmp_path / "checkpoints", sd


@pytest.mark.parametrize("prefix", [None, False])
def test_freeze_omni_decoder_maps_key_for_key_and_reports_the_rest(tmp_path, prefix):
    from vita.interop.speech_decoder import load_freeze_omni_decoder

    folder, sd = freeze_omni_fixture(tmp_path)
    got = load_freeze_omni_decoder(folder, llm_hidden=32, prefix=prefix)
    if prefix is False:     # VITA-1.5's inference: the KV-prefix NAR is never run, all of it is left out
        assert sorted(got.unmapped) == sorted(k for k in sd if k.startswith("layers_prefix."))
        assert all("KV-prefix" in why for why in got.unmapped.values())
    else:                   # Freeze-Omni's: all but the parts of the last prefix layer nobody reads
        unread = ("self_attn.q_proj.", "self_attn.o_proj.", "mlp.", "post_attention_layernorm.")
        assert sorted(got.unmapped) == sorted(k for k in sd if k.startswith(tuple(f"layers_prefix.1.{u}" for u in unread)))
        assert ("layers_prefix.1.self_attn.k_proj.weight", "layers_prefix.1.self_attn.k_proj.weight") in got.mapped
    assert len(got.mapped) + len(got.unmapped) == len(sd) and got.left_at_init == []
    own = got.decoder.state_dict()
    for src, dst in got.mapped:
        assert torch.equal(own[dst], sd[src]), (src, dst)
    assert ("layers_pre_nn.0.self_attn.q_proj.weight", "nar_layers.0.self_attn.q_proj.weight") in got.mapped
    assert got.overrides == dict(hidden=16, heads=2, intermediate=24, nar_layers=1, ar_layers=2, input="split",
                                 use_hidden=False, prefix_layers=0 if prefix is False else 2)
    assert got.decoder.codebook_size == 10 and "layers_prefix" in got.report()
    h = torch.randn(3, 32)
    assert generated(got.decoder, h, h, max_frames=5).shape[1] == 1


def test_freeze_omni_cli_writes_weights_stage32_can_rebuild(tmp_path):
    from safetensors.torch import load_file

    from vita.interop.speech_decoder import main

    folder, _ = freeze_omni_fixture(tmp_path, prefix=False)
    out = tmp_path / "dec.safetensors"
    assert main([str(folder), "--out", str(out), "--llm-hidden", "32"]) == 0
    rebuilt = SPEECH_DECODERS.build("nar_ar", llm_hidden=32, codebooks=1, codebook_size=10, hidden=16, heads=2,
                                    intermediate=24, nar_layers=1, ar_layers=2, input="split", use_hidden=False,
                                    prefix_layers=0)
    rebuilt.load_state_dict(load_file(str(out)), strict=True)
    with pytest.raises(Exception, match="final.pt"):
        main([str(tmp_path), "--out", str(out)]) if False else __import__(
            "vita.interop.speech_decoder", fromlist=["x"]).read_freeze_omni(tmp_path / "nothing")


def test_block_computes_what_a_llama_decoder_layer_computes():
    """The per-layer mapping is sound: vita's block with a LlamaDecoderLayer's weights gives its output."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    from vita.model.speech.blocks import Block, rope

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=16, intermediate_size=24, num_attention_heads=2, num_hidden_layers=1, vocab_size=8)
    cfg._attn_implementation = "eager"
    ref = LlamaDecoderLayer(cfg, 0)
    for p in ref.parameters():
        nn.init.normal_(p, std=0.3)
    mine = Block(16, 2, 24)
    mine.load_state_dict(ref.state_dict(), strict=True)
    x, pos = torch.randn(1, 7, 16), torch.arange(7).unsqueeze(0)
    allowed = torch.ones(7, 7, dtype=torch.bool).tril()
    float_mask = torch.zeros(1, 1, 7, 7).masked_fill(~allowed, float("-inf"))
    out = ref(x, attention_mask=float_mask, position_ids=pos, position_embeddings=LlamaRotaryEmbedding(cfg)(x, pos))
    out = out[0] if isinstance(out, tuple) else out
    got, _ = mine(x, rope(pos, 8, 10000.0, x.dtype), allowed.unsqueeze(0))
    assert torch.allclose(got, out, atol=1e-5), (got - out).abs().max()
