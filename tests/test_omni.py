"""OmniModel: the splice, placeholder checks, the dummy-input contract, losses, data spec."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from vita.config import ModelConfig
from vita.errors import ConfigError, DataError
from vita.model import OmniModel, build_model, ensure_media_tokens
from vita.model.tokens import MEDIA_TOKENS

IMG, VID, AUD = 1000, 1001, 1002


def make(backbone="tiny-qwen2", tower="tiny-internvit", audio="tiny-vita", **extra) -> OmniModel:
    torch.manual_seed(0)
    cfg = OmegaConf.structured(ModelConfig(backbone=backbone))
    cfg.vision.tower, cfg.audio.encoder = tower, audio
    for k, v in extra.items():
        OmegaConf.update(cfg, k, v)
    m = build_model(cfg, vocab_size=1024)
    m.set_media_token_ids(IMG, VID, AUD)
    return m


def batch(m: OmniModel, tiles=(2, 1), clips=((77,), ()), length=64):
    """Two samples: sample b has tiles[b] image tiles then clips[b] audio clips (frame counts)."""
    T = m.tokens_per_tile
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 900, (2, length), generator=g)
    frames = []
    for b in range(2):
        pos = 2
        for t in range(tiles[b]):
            ids[b, pos:pos + T] = IMG if t % 2 == 0 else VID
            pos += T
        for n in clips[b]:
            k = m.audio_num_tokens(n)
            ids[b, pos:pos + k] = AUD
            pos += k + 1
            frames.append(n)
    labels = ids.clone()
    labels[ids >= IMG] = -100
    out = dict(input_ids=ids, labels=labels, attention_mask=torch.ones_like(ids))
    if sum(tiles):
        out["pixel_values"] = torch.randn(sum(tiles), 3, 56, 56, generator=g)
    if frames:
        out["audio_features"] = torch.randn(len(frames), max(frames), 80, generator=g)
        out["audio_lengths"] = torch.tensor(frames)
    return out


def test_splice_puts_features_at_placeholders():
    """Placeholder rows hold the projected tile/clip features in order; other rows the token embeddings."""
    m = make().eval()
    b = batch(m, tiles=(2, 1), clips=((77, 40), (50,)))
    with torch.no_grad():
        emb, zero = m.embed(b["input_ids"], b["pixel_values"], b["audio_features"], b["audio_lengths"])
        img = m.encode_images(b["pixel_values"]).reshape(-1, emb.shape[-1])
        aud, counts = m.encode_audio(b["audio_features"], b["audio_lengths"])
        tok = m.llm.get_input_embeddings()(b["input_ids"])
    ids = b["input_ids"]
    vis = (ids == IMG) | (ids == VID)
    torch.testing.assert_close(emb[vis], img, rtol=0, atol=0)
    torch.testing.assert_close(emb[ids == AUD], torch.cat([aud[i, :n] for i, n in enumerate(counts)]), rtol=0, atol=0)
    text = ~vis & (ids != AUD)
    torch.testing.assert_close(emb[text], tok[text], rtol=0, atol=0)
    assert float(zero) == 0.0


@pytest.mark.parametrize("backbone", ["tiny-qwen2", "tiny-llama", "tiny-mistral-nemo"])
def test_text_only_loss_equals_bare_model(backbone):
    """Without encoders, OmniModel's token-mean loss is the transformers model's loss (to float rounding)."""
    m = make(backbone, tower=None, audio=None).eval()
    b = batch(m, tiles=(0, 0), clips=((), ()))
    b["labels"][:, :5] = -100
    with torch.no_grad():
        out = m(**b)
        ref = m.llm(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
    # same logits; only sum/n vs mean reduction order may differ, in the last bit
    torch.testing.assert_close(out["ce_sum"] / out["num_tokens"], ref, rtol=1e-6, atol=0)
    assert out["aux"] == {}


def test_mixtral_loss_adds_router_aux_loss():
    """Mixtral: ce/n + aux['router'] equals the transformers loss (CE + coef x load-balancing)."""
    m = make("tiny-mixtral", tower=None, audio=None).eval()
    b = batch(m, tiles=(0, 0), clips=((), ()))
    with torch.no_grad():
        out = m(**b)
        ref = m.llm(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"],
                    output_router_logits=True).loss
    assert set(out["aux"]) == {"router"}
    torch.testing.assert_close(out["ce_sum"] / out["num_tokens"] + out["aux"]["router"], ref, rtol=1e-6, atol=1e-6)


def test_missing_modality_runs_dummy_and_adds_zero():
    """A text-only batch still sends gradients (zeros) to every encoder and projector; loss unchanged."""
    m = make()
    b = batch(m, tiles=(0, 0), clips=((), ()))
    out = m(**b)
    with torch.no_grad():
        ref = m.llm(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
    torch.testing.assert_close(out["ce_sum"] / out["num_tokens"], ref)
    (out["ce_sum"] / out["num_tokens"]).backward()
    for group in ("vision_tower", "vision_projector", "audio_encoder", "audio_projector"):
        grads = [p.grad for n, p in m.module_groups()[group].named_parameters()
                 if p.requires_grad and "layer.1." not in n]
        assert grads and all(g is not None for g in grads), group
        assert all(float(g.abs().sum()) == 0.0 for g in grads), group


def test_full_batch_backward_reaches_every_group():
    """Images and audio: the loss is finite and every module group gets non-zero gradients."""
    m = make()
    out = m(**batch(m))
    (out["ce_sum"] / out["num_tokens"]).backward()
    for name, mod in m.module_groups().items():
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in mod.parameters()), name


def test_too_few_image_placeholders_names_the_sample():
    m = make()
    b = batch(m, tiles=(2, 1), clips=((), ()))
    b["input_ids"][1, 2] = 5  # one position short in sample 1
    with pytest.raises(DataError, match=r"sample 1 \(s-b\) has 3 image/video placeholder positions, not a multiple of the 4"):
        m(**b, sample_ids=["s-a", "s-b"])


def test_tile_count_mismatch_reports_counts():
    m = make()
    b = batch(m, tiles=(2, 1), clips=((), ()))
    b["pixel_values"] = b["pixel_values"][:2]
    with pytest.raises(DataError, match=r"placeholders for 3 tiles/frames \(per sample: \[2, 1\]\) but pixel_values has 2"):
        m(**b)


def test_audio_placeholder_mismatch_names_the_sample():
    m = make()
    b = batch(m, tiles=(0, 0), clips=((77,), (50,)))
    b["audio_lengths"] = torch.tensor([77, 30])
    with pytest.raises(DataError, match=r"sample 1 \(y\) has 6 audio placeholder positions but its clips give 3"):
        m(**b, sample_ids=["x", "y"])


def test_placeholders_without_media_is_an_error():
    m = make()
    b = batch(m, tiles=(1, 0), clips=((), ()))
    del b["pixel_values"]
    with pytest.raises(DataError, match="sample 0 has 4 image/video placeholder positions but the batch carries no pixel_values"):
        m(**b)


def test_data_spec_matches_the_model():
    m = make()
    s = m.data_spec()
    assert (s.image_size, s.tokens_per_tile, s.audio_feature, s.n_mels) == (56, 4, "fbank", 80)
    assert s.image_mean == (0.485, 0.456, 0.406)
    assert s.audio_num_tokens(400) == m.audio_num_tokens(400) == 50
    assert (s.image_token_id, s.video_token_id, s.audio_token_id) == (IMG, VID, AUD)
    w = make(tower="tiny-siglip", audio="tiny-whisper").data_spec()
    assert (w.audio_feature, w.tokens_per_tile, w.image_std) == ("whisper", 16, (0.5, 0.5, 0.5))


def test_audio_prompts_are_prepended_and_trained():
    """audio.prompt_num=K: each clip fills K more positions, the K vectors come first and get gradients."""
    m = make(**{"audio.prompt_num": 3})
    assert m.audio_num_tokens(77) == make().audio_num_tokens(77) + 3
    b = batch(m, tiles=(0, 0), clips=((77,), ()))
    emb, _ = m.embed(b["input_ids"], None, b["audio_features"], b["audio_lengths"])
    first = (b["input_ids"][0] == AUD).nonzero()[0, 0]
    torch.testing.assert_close(emb[0, first:first + 3], m.audio_encoder.prompt_embeddings.weight)
    out = m(**b)
    out["ce_sum"].backward()
    assert m.audio_encoder.prompt_embeddings.weight.grad.abs().sum() > 0


def test_fo_state_head_loss():
    """qwen2.5-fo: labels -101/-102 train the 3-class state head (weights 1, 5, 1) and are ignored by the LM."""
    m = make("tiny-qwen2.5-fo", tower=None, audio=None)
    assert "heads" in m.module_groups() and m.state_head.out_features == 3
    b = batch(m, tiles=(0, 0), clips=((), ()))
    b["labels"][0, 10], b["labels"][1, 20] = -101, -102
    out = m(**b)
    assert set(out["aux"]) == {"state"} and torch.isfinite(out["aux"]["state"])
    assert int(out["num_tokens"]) == int((b["labels"][:, 1:] >= 0).sum())
    out["aux"]["state"].backward()
    assert m.state_head.weight.grad.abs().sum() > 0


def test_flash_attention_missing_is_a_clear_error():
    with pytest.raises(ConfigError, match="flash_attention_2 needs flash-attn"):
        make(tower=None, audio=None, attn_implementation="flash_attention_2")


def test_eager_attention_gives_the_same_loss():
    b = batch(make(tower=None, audio=None), tiles=(0, 0), clips=((), ()))
    with torch.no_grad():
        a = make(tower=None, audio=None)(**b)["ce_sum"]
        e = make(tower=None, audio=None, attn_implementation="eager")(**b)["ce_sum"]
    torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-4)


def test_ensure_media_tokens_adds_and_resizes():
    """A tokenizer without the placeholders gets them as special tokens; the LLM embeddings grow to fit."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({f"w{i}": i for i in range(1024)} | {"[UNK]": 1023}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk)
    m = make(tower=None, audio=None)
    ids = ensure_media_tokens(tok, m)
    assert sorted(ids.values()) == [1024, 1025, 1026]
    assert m.llm.get_input_embeddings().num_embeddings == 1027
    assert (m.image_token_id, m.video_token_id, m.audio_token_id) == tuple(ids[t] for t in MEDIA_TOKENS)
    assert tok.convert_ids_to_tokens(tok("w1 <|audio_pad|> w2")["input_ids"]) == ["w1", "<|audio_pad|>", "w2"]
    assert ensure_media_tokens(tok, m) == ids  # idempotent


def test_trust_remote_code_only_when_configured(monkeypatch, tmp_path):
    """Loading a pretrained LLM passes trust_remote_code only when model.trust_remote_code is true."""
    import transformers

    seen = []

    def fake(path, **kw):
        seen.append(kw)
        raise OSError("stop here")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake)
    for flag in (False, True):
        cfg = OmegaConf.structured(ModelConfig(backbone="tiny-qwen2", pretrained=str(tmp_path), trust_remote_code=flag))
        with pytest.raises(ConfigError):
            build_model(cfg)
    assert "trust_remote_code" not in seen[0] and seen[1]["trust_remote_code"] is True


def test_mixtral_expert_blocks_are_zero3_leaves():
    """Mixtral's sparse MoE blocks are registered as ZeRO-3 leaf modules by build_model."""
    from deepspeed.utils import z3_leaf_module

    m = make("tiny-mixtral", tower=None, audio=None)
    blocks = [mod for mod in m.modules() if type(mod).__name__ == "MixtralSparseMoeBlock"]
    assert len(blocks) == 2 and all(z3_leaf_module(b) for b in blocks)
    assert not any(z3_leaf_module(mod) for mod in make(tower=None, audio=None).modules())


def test_tiny_omni_trains_through_vita_run(tmp_path):
    """`python -m vita.run model=tiny_omni experiment=smoke`: text-only data (encoders on dummies), exports
    one safetensors per encoder/projector next to the HF LLM."""
    from tests.conftest import find_run, losses, quiet, run_vita

    run_vita(["model=tiny_omni", "experiment=smoke", *quiet("omni", tmp_path)])
    run = find_run(tmp_path, "omni")
    ls = losses(run)
    assert len(ls) == 10 and ls[-1] < ls[0]
    for group in ("vision_tower", "vision_projector", "audio_encoder", "audio_projector"):
        assert (run / "final" / f"{group}.safetensors").is_file(), group


def test_media_without_placeholder_ids_says_how_to_fix():
    m = make()
    b = batch(m, tiles=(1, 0), clips=((), ()))
    m.set_media_token_ids(None, None, None)
    with pytest.raises(DataError, match=r"call vita.model.ensure_media_tokens\(tokenizer, model\)"):
        m(**b)


@pytest.mark.parametrize("audio,proj,prompts", [("tiny-vita", "subsampling", 0), ("tiny-whisper", "subsampling", 0),
                                                ("tiny-vita", "linear", 3), (None, "subsampling", 0)])
def test_data_spec_pickles_and_counts_like_the_model(audio, proj, prompts):
    """The spec travels to data workers (pickle) and its audio counter agrees with the model's forward."""
    import pickle

    m = make(audio=audio, **{"audio.projector": proj, "audio.prompt_num": prompts})
    spec = pickle.loads(pickle.dumps(m.data_spec()))
    for n in (1, 9, 77, 400, 2999, 3000, 5000):
        assert spec.audio_num_tokens(n) == m.audio_num_tokens(n), n
    if audio is not None:
        x, counts = m.encode_audio(torch.randn(2, 300, 80), torch.tensor([300, 123]))
        assert counts == [spec.audio_num_tokens(300), spec.audio_num_tokens(123)]
        assert x.shape[1] >= max(counts)


def test_data_spec_with_token_ids_reads_the_tokenizer():
    """DataSpec.with_token_ids fills the placeholder ids from a tokenizer that has them as single tokens."""
    from transformers import AutoTokenizer

    from vita.config import ASSETS

    tok = AutoTokenizer.from_pretrained(str(ASSETS / "tokenizers" / "chatterbot-bpe"))
    m = make()
    m.set_media_token_ids(None, None, None)
    spec = m.data_spec().with_token_ids(tok)
    assert spec.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert spec.audio_token_id == tok.convert_tokens_to_ids("<|audio_pad|>")
