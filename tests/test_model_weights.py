"""Loading encoder / projector weights: key layouts, and errors that name the bad keys."""

from __future__ import annotations

import re

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from vita.config import ModelConfig
from vita.errors import CheckpointError
from vita.model import build_model


def _cfg(**kw):
    cfg = OmegaConf.structured(ModelConfig(backbone="tiny-qwen2"))
    cfg.vision.tower, cfg.audio.encoder = "tiny-internvit", "tiny-vita"
    for k, v in kw.items():
        OmegaConf.update(cfg, k, v)
    return cfg


def _to_opengvlab(sd: dict) -> dict:
    """transformers InternVL vision keys -> OpenGVLab InternViT keys (fused qkv), written for the test."""
    out = {}
    for k, v in sd.items():
        m = re.match(r"encoder\.layer\.(\d+)\.(.+)$", k)
        if k == "embeddings.cls_token":
            out["embeddings.class_embedding"] = v
        elif k == "embeddings.position_embeddings":
            out["embeddings.position_embedding"] = v
        elif k.startswith("embeddings.patch_embeddings.projection."):
            out["embeddings.patch_embedding." + k.rsplit(".", 1)[1]] = v
        elif m:
            i, rest = m.groups()
            if rest.startswith("attention.q_proj"):
                kind = rest.rsplit(".", 1)[1]
                parts = [sd[f"encoder.layer.{i}.attention.{p}_proj.{kind}"] for p in "qkv"]
                out[f"encoder.layers.{i}.attn.qkv.{kind}"] = torch.cat(parts)
            elif rest.startswith(("attention.k_proj", "attention.v_proj")):
                continue
            else:
                rest = (rest.replace("attention.projection_layer", "attn.proj").replace("lambda_1", "ls1")
                        .replace("lambda_2", "ls2").replace("layernorm_before", "norm1").replace("layernorm_after", "norm2"))
                out[f"encoder.layers.{i}.{rest}"] = v
        else:
            out[k] = v
    return out


@pytest.mark.parametrize("layout", ["transformers", "opengvlab"])
def test_internvit_loads_both_layouts(tmp_path, layout):
    """A saved tower loads back from transformers' layout and from the original fused-qkv layout."""
    torch.manual_seed(0)
    src = build_model(_cfg())
    sd = {k: v.clone() for k, v in src.vision_tower.model.state_dict().items()}
    if layout == "opengvlab":
        sd = _to_opengvlab(sd)
        assert any("attn.qkv" in k for k in sd)
    save_file({"vision_model." + k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "tower.safetensors"))
    torch.manual_seed(1)
    dst = build_model(_cfg(**{"vision.pretrained": str(tmp_path / "tower.safetensors")}))
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(dst.vision_tower(x), src.vision_tower(x))


def test_missing_and_wrong_shape_keys_are_named(tmp_path):
    sd = {k: v.clone() for k, v in build_model(_cfg()).vision_tower.model.state_dict().items()}
    del sd["encoder.layer.1.mlp.fc2.bias"]
    sd["encoder.layer.0.mlp.fc1.weight"] = torch.zeros(3, 3)
    sd["encoder.layer.9.extra"] = torch.zeros(1)
    save_file(sd, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError) as ei:
        build_model(_cfg(**{"vision.pretrained": str(tmp_path / "bad.safetensors")}))
    msg = str(ei.value)
    assert "\n" not in msg
    assert "missing keys: encoder.layer.1.mlp.fc2.bias" in msg
    assert "unexpected keys: encoder.layer.9.extra" in msg
    assert "wrong shapes: encoder.layer.0.mlp.fc1.weight (3, 3) vs model (64, 32)" in msg


def test_vita_audio_final_pt_with_cmvn_and_adapter(tmp_path):
    """VITA's final.pt (the whale AudioEncoder's state dict: encoder.* with the subsampling under
    encoder.enc.0.core, adpter.{conv1d2,bn2,project}; built from upstream's modules in
    tests/interop_fixtures.py) plus a global_cmvn JSON file."""
    import json

    from tests.interop_fixtures import AUD, audio_tensors

    src = {k.removeprefix("model.audio_encoder."): v for k, v in audio_tensors(torch.Generator().manual_seed(0)).items()}
    sd = {k: v for k, v in src.items() if not k.startswith("encoder.global_cmvn")}
    assert "encoder.enc.0.core.conv.0.weight" in sd
    torch.save(sd, tmp_path / "final.pt")
    mean, var = torch.linspace(11.8, 16.9, 80), torch.full((80,), 10.0)
    (tmp_path / "global_cmvn").write_text(json.dumps({"mean_stat": (mean * 100).tolist(),
                                                      "var_stat": ((var + mean**2) * 100).tolist(), "frame_num": 100}))
    dst = build_model(_cfg(**{"audio.pretrained": str(tmp_path / "final.pt"),
                              "audio.projector_pretrained": str(tmp_path / "final.pt")}))
    assert dst.audio_encoder.hidden_size == AUD["d"]
    cmvn = dst.audio_encoder.encoder.global_cmvn
    torch.testing.assert_close(cmvn.mean, mean)
    torch.testing.assert_close(cmvn.istd, torch.full((80,), 10.0**-0.5))
    names = {"conv1d": "conv1d2", "norm": "bn2", "linear": "project"}
    for k, v in dst.audio_projector.state_dict().items():
        head, rest = k.split(".", 1)
        assert torch.equal(v, sd[f"adpter.{names[head]}.{rest}"]), k
    enc = dst.audio_encoder.encoder.state_dict()
    assert torch.equal(enc["enc.0.conv.0.weight"], sd["encoder.enc.0.core.conv.0.weight"])
    assert all(torch.equal(v, sd["encoder." + k.replace("enc.0.", "enc.0.core.", 1)]) for k, v in enc.items()
               if not k.startswith("global_cmvn"))


def test_pickled_code_is_refused(tmp_path):
    """Weights load with torch.load(weights_only=True): a pickle with code does not execute."""
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        build_model(_cfg(**{"audio.pretrained": str(tmp_path / "evil.pt")}))


@pytest.mark.parametrize("tower", ["tiny-siglip", "tiny-clip"])
def test_siglip_clip_load_a_saved_tower(tmp_path, tower):
    """SigLIP / CLIP towers load a transformers checkpoint (``vision_model.`` prefix stripped)."""
    torch.manual_seed(0)
    src = build_model(_cfg(**{"vision.tower": tower}))
    save_file({k: v.contiguous() for k, v in src.vision_tower.model.state_dict().items()},
              str(tmp_path / "t.safetensors"))
    torch.manual_seed(1)
    dst = build_model(_cfg(**{"vision.tower": tower, "vision.pretrained": str(tmp_path / "t.safetensors")}))
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(dst.vision_tower(x), src.vision_tower(x))


def test_tower_loads_from_a_whole_model_checkpoint(tmp_path):
    """An InternVL-Chat style file (vision_model.* next to mlp1.* and language_model.*) loads the tower part."""
    torch.manual_seed(0)
    src = build_model(_cfg())
    sd = {"vision_model." + k: v.contiguous() for k, v in _to_opengvlab(src.vision_tower.model.state_dict()).items()}
    sd["mlp1.0.weight"] = torch.zeros(2, 2)
    sd["language_model.model.embed_tokens.weight"] = torch.zeros(4, 2)
    save_file(sd, str(tmp_path / "internvl_chat.safetensors"))
    dst = build_model(_cfg(**{"vision.pretrained": str(tmp_path / "internvl_chat.safetensors")}))
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(dst.vision_tower(x), src.vision_tower(x))


def test_vita_mm_projector_bin_loads(tmp_path):
    """VITA's mm_projector.bin (keys model.mm_projector.0/2.*) loads into mlp2x_gelu; prefix stripped."""
    torch.manual_seed(0)
    src = build_model(_cfg())
    sd = {f"model.mm_projector.{k.removeprefix('layers.')}": v.clone() for k, v in src.vision_projector.state_dict().items()}
    assert set(sd) == {f"model.mm_projector.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")}
    torch.save(sd, tmp_path / "mm_projector.bin")
    torch.manual_seed(1)
    dst = build_model(_cfg(**{"vision.projector_pretrained": str(tmp_path / "mm_projector.bin")}))
    for k, v in src.vision_projector.state_dict().items():
        assert torch.equal(dst.vision_projector.state_dict()[k], v), k
