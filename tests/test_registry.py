"""Registries: register/build, clear errors for duplicates and misses, every built-in entry builds."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from vita.config import DataConfig
from vita.errors import ConfigError
from vita.registry import (
    AUDIO_ENCODERS,
    BACKBONES,
    DATASETS,
    PROJECTORS,
    SAMPLERS,
    TEMPLATES,
    VISION_TOWERS,
    Registry,
    RegistryError,
    load_builtins,
)

load_builtins()

# Parameter budget under which a backbone counts as tiny (instantiated as registered).
TINY_PARAMS = 5_000_000
# Shape overrides that make any registered backbone small enough to instantiate on CPU.
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=1024, max_position_embeddings=512)


@pytest.fixture
def reg() -> Registry:
    r = Registry("widget")
    for name in ("tiny-qwen2", "qwen2.5-0.5b", "mlp"):
        r.register(name)(lambda name=name, **kw: (name, kw))
    return r


def test_register_and_build_passes_kwargs(reg):
    """``build`` calls the registered factory with the keyword arguments."""
    assert reg.build("mlp", width=3) == ("mlp", {"width": 3})
    assert "mlp" in reg and "nope" not in reg
    assert len(reg) == 3
    assert list(reg) == reg.names() == ["mlp", "qwen2.5-0.5b", "tiny-qwen2"]


def test_register_returns_the_function_unchanged():
    """The decorator leaves the factory usable directly."""
    r = Registry("widget")

    @r.register("f")
    def f(x=1):
        return x * 2

    assert f(x=4) == 8
    assert r.get("f") is f


def test_duplicate_name_is_an_error(reg):
    """Registering a name twice raises, naming the kind, the key and the first owner."""
    with pytest.raises(RegistryError) as ei:
        reg.register("mlp")(lambda: None)
    msg = str(ei.value)
    assert "widget 'mlp' is already registered" in msg
    assert "<lambda>" in msg  # the original factory is named
    assert reg.build("mlp") == ("mlp", {})  # the first registration is kept


def test_miss_names_key_known_keys_and_close_matches(reg):
    """An unknown key gives one line with the bad key, every known key and the close matches."""
    with pytest.raises(RegistryError) as ei:
        reg.build("tiny-qwen3")
    msg = str(ei.value)
    assert "\n" not in msg
    assert "'tiny-qwen3'" in msg
    assert "Did you mean 'tiny-qwen2'" in msg
    assert "Known widgets: mlp, qwen2.5-0.5b, tiny-qwen2" in msg
    assert not msg.startswith('"')  # not KeyError's quoted repr


def test_miss_without_close_match_has_no_hint(reg):
    """A key like nothing registered lists the known keys without a 'Did you mean'."""
    with pytest.raises(RegistryError) as ei:
        reg.get("zzzzzzzz")
    assert "Did you mean" not in str(ei.value)
    assert "mlp" in str(ei.value)


def test_registry_error_is_config_and_key_error(reg):
    """Callers may catch a miss as ConfigError (one-line report) or KeyError (mapping protocol)."""
    with pytest.raises(ConfigError):
        reg.get("x")
    with pytest.raises(KeyError):
        reg.get("x")


# ---------------------------------------------------------------- built-in entries


def _approx_params(cfg) -> int:
    h, n, v = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    inter = getattr(cfg, "intermediate_size", 4 * h)
    return n * (4 * h * h + 3 * h * inter) + v * h


def _forward_backward(config) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    ids = torch.randint(0, config.vocab_size, (2, 8))
    out = model(input_ids=ids, labels=ids)
    assert torch.isfinite(out.loss), out.loss
    assert out.logits.shape == (2, 8, config.vocab_size)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_builtins_are_registered():
    """load_builtins fills the registries the config validates against."""
    assert {"tiny-qwen2", "qwen2.5-0.5b"} <= set(BACKBONES)
    assert {"random", "sequential"} <= set(SAMPLERS)
    assert "chatml" in TEMPLATES
    assert "chatterbot" in DATASETS


@pytest.mark.parametrize("key", BACKBONES.names())
def test_every_backbone_builds_and_trains_a_step(key):
    """Each backbone config builds; tiny ones run as registered, larger ones shrunk by overrides."""
    config = BACKBONES.build(key)
    assert config.vocab_size > 0 and config.num_hidden_layers > 0
    if _approx_params(config) > TINY_PARAMS:
        config = BACKBONES.build(key, **SMALL)
        for k, v in SMALL.items():
            assert getattr(config, k) == v, f"{key} ignores override {k}"
    assert _approx_params(config) <= TINY_PARAMS
    _forward_backward(config)


def test_tiny_qwen2_is_tiny_and_takes_overrides():
    """tiny-qwen2 is the CPU demo model; overrides replace its defaults."""
    cfg = BACKBONES.build("tiny-qwen2")
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == (64, 2, 1024)
    assert BACKBONES.build("tiny-qwen2", num_hidden_layers=3).num_hidden_layers == 3


def test_qwen25_05b_shape():
    """qwen2.5-0.5b carries the published shape numbers (config only, no weights)."""
    cfg = BACKBONES.build("qwen2.5-0.5b")
    assert cfg.model_type == "qwen2"
    assert cfg.hidden_size == 896
    assert cfg.num_hidden_layers == 24
    assert cfg.num_attention_heads == 14
    assert cfg.num_key_value_heads == 2
    assert cfg.intermediate_size == 4864
    assert cfg.vocab_size == 151936
    assert cfg.tie_word_embeddings is True


@pytest.mark.parametrize("key", SAMPLERS.names())
def test_every_sampler_builds(key):
    """Each sampler yields in-range global batches: full ones, or within the token budget."""
    s = SAMPLERS.build(key, num_samples=10, global_batch_size=4, seed=1, token_budget=4)
    b = s.batch(0, 1)
    assert all(0 <= i < 10 for i in b)
    if key == "token_budget":  # 10 unit-length samples, 4 tokens a micro-batch: 4 + 4 + 2
        assert s.steps_per_epoch == 3 and 1 <= len(b) <= 4
    else:
        assert s.steps_per_epoch == 2 and len(b) == 4


@pytest.mark.parametrize("key", TEMPLATES.names())
def test_every_template_builds(key):
    """Each template turns a two-turn conversation into segments, some supervised."""
    t = TEMPLATES.build(key)
    segs = t.segments([{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}], "s0")
    assert any(sup for _, sup in segs) and any(not sup for _, sup in segs)
    assert "hello" in "".join(text for text, sup in segs if sup)


@pytest.mark.parametrize("key", DATASETS.names())
def test_every_dataset_format_builds(key, tmp_path):
    """Each dataset format reads samples with ids and conversations (``vita``: from a JSONL file)."""
    from vita.config import SourceConfig

    ann = tmp_path / "a.jsonl"
    ann.write_text('{"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}\n')
    data_cfg = OmegaConf.structured(DataConfig(name="t", format=key,
                                               datasets=[SourceConfig(name="a", annotations=[str(ann)])]))
    if key == "shards":  # a stream, read by build_shard_data (tests/test_data_shards.py), never by record
        with pytest.raises(ConfigError, match="read as a stream"):
            DATASETS.build(key, data_cfg=data_cfg)
        return
    samples = DATASETS.build(key, data_cfg=data_cfg)
    first = samples[0] if isinstance(samples, list) else samples.read(0)[0]
    assert len(samples) and {"id", "conversations"} <= set(first)


def test_model_registries_are_filled():
    """Encoders and projectors are registered (each is exercised in tests/test_model_zoo.py)."""
    assert {"internvit", "siglip", "clip", "tiny-internvit", "tiny-siglip", "tiny-clip"} <= set(VISION_TOWERS)
    assert {"vita", "whisper", "tiny-vita", "tiny-whisper"} <= set(AUDIO_ENCODERS)
    assert {"linear", "mlp2x_gelu", "spp_v1", "spp_v2", "spp_v3", "ldp", "vanilla", "minigpt", "identity",
            "subsampling"} <= set(PROJECTORS)


def test_every_backbone_family_has_a_tiny_sibling():
    """qwen2.5, qwen2.5-fo, mixtral, mistral-nemo, llama: each has full shapes and a tiny entry."""
    for full, tiny in [("qwen2.5-7b", "tiny-qwen2"), ("qwen2.5-fo-7b", "tiny-qwen2.5-fo"),
                       ("mixtral-8x7b", "tiny-mixtral"), ("mistral-nemo-12b", "tiny-mistral-nemo"),
                       ("llama3-8b", "tiny-llama"), ("smollm2-135m", "tiny-llama")]:
        assert BACKBONES.build(full).model_type == BACKBONES.build(tiny).model_type, full
        assert _approx_params(BACKBONES.build(tiny)) <= TINY_PARAMS


@pytest.mark.parametrize("key,shape", [
    ("qwen2.5-7b", (3584, 28, 28, 4, 18944, 152064)),
    ("qwen2.5-1.5b", (1536, 28, 12, 2, 8960, 151936)),
    ("mixtral-8x7b", (4096, 32, 32, 8, 14336, 32000)),
    ("mistral-nemo-12b", (5120, 40, 32, 8, 14336, 131072)),
    ("smollm2-135m", (576, 30, 9, 3, 1536, 49152)),
])
def test_published_backbone_shapes(key, shape):
    """Shape numbers: hidden, layers, heads, kv heads, FFN, vocab."""
    c = BACKBONES.build(key)
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size,
            c.vocab_size) == shape
