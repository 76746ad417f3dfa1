"""vita.interop: VITA whole-model folders in and out (import, export --format vita, errors).

The tiny folders (tests/interop_fixtures.py) are written in VITA's layout by hand: two shards
+ index, VITA's config fields and key names. Tolerances: text logits vs plain transformers
1e-6 in fp32 (the same weights through the same kernels: only a copy differs).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.interop_fixtures import H, llm_only_folder, make_vita_folder
from vita.errors import CheckpointError, ConfigError
from vita.interop import compose_from_vita, export_vita, load_group_file, load_vita
from vita.interop.exporter import read_all

FAMILIES = ["vita-Qwen2", "vita-fo-Qwen2", "vita-mixtral"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vita_folders")
    return {mt: make_vita_folder(root / mt, mt, seed=i) for i, mt in enumerate(FAMILIES)}


@pytest.fixture(scope="module")
def imported(folders):
    cache = {}

    def get(mt: str):
        if mt not in cache:
            cache[mt] = load_vita(folders[mt], progress=False)
        return cache[mt]
    return get


def _ids(n: int = 12, vocab: int = 1000) -> torch.Tensor:
    return torch.randint(10, vocab, (2, n), generator=torch.Generator().manual_seed(1))  # no media ids: text only


@pytest.mark.parametrize("mt", FAMILIES)
def test_import_export_round_trip_is_bitwise(mt, folders, tmp_path):
    """VITA -> vita export (convert) -> VITA layout: the same keys, bitwise-equal tensors, VITA's fields."""
    from vita.export import main as export_main
    from vita.interop.convert import main as convert_main

    src = folders[mt]
    assert convert_main([str(src), "--out", str(tmp_path / "exp")]) == 0
    assert export_main([str(tmp_path / "exp"), str(tmp_path / "back"), "--format", "vita",
                        "--max-shard-size", "300KB"]) == 0
    back = tmp_path / "back"
    a, b = read_all(src), read_all(back)
    assert sorted(a) == sorted(b)
    differ = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert not differ, differ[:5]
    index = json.loads((back / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((back / s).is_file() for s in shards)
    ca, cb = (json.loads((d / "config.json").read_text()) for d in (src, back))
    for k in ("model_type", "architectures", "mm_vision_tower", "mm_audio_encoder", "mm_hidden_size",
              "mm_projector_type", "image_aspect_ratio", "hidden_size", "num_hidden_layers", "vocab_size",
              "rope_theta", "tie_word_embeddings", "torch_dtype", "predict_usr_state", "audio_prompt_num",
              "audio_prompt_finetune"):
        assert ca.get(k) == cb.get(k), k
    assert (back / "tokenizer.json").is_file()
    assert sorted(k for k in b if ".enc.0." in k) == SUBSAMPLING_KEYS  # upstream's names, with core
    again = load_vita(back, progress=False)  # and it imports again, to the same tensors
    first = load_vita(src, progress=False)
    sd_a, sd_b = first.model.state_dict(), again.model.state_dict()
    assert sorted(sd_a) == sorted(sd_b) and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert again.imported.model.audio.prompt_num == first.imported.model.audio.prompt_num


E = "model.audio_encoder.encoder.enc.0."
SUBSAMPLING_KEYS = sorted(f"{E}core.{m}.{p}" for m in ("conv.0", "conv.2", "out.0") for p in ("weight", "bias"))


def test_old_subsampling_names_are_refused_naming_the_six_keys(folders, tmp_path):
    """A folder written with vita's former reading (enc.0.conv.* without core) is refused in one line naming
    the six keys: VITA's own loader could not fill them either."""
    d = _copy(folders["vita-Qwen2"], tmp_path)
    for key in SUBSAMPLING_KEYS:
        old = key.replace(".enc.0.core.", ".enc.0.")
        _rewrite(_shard_with(d, key), lambda sd, k=key, o=old: sd.__setitem__(o, sd.pop(k)))
        _edit_index(d, lambda wm, k=key, o=old: wm.__setitem__(o, wm.pop(k)))
    with pytest.raises(CheckpointError) as e:
        load_vita(d, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "core" in msg
    assert all(k.replace(".enc.0.core.", ".enc.0.") in msg for k in SUBSAMPLING_KEYS)


# fields VITA's code reads from config.json to build the model (VITA-MLLM/VITA, vita/model/): vita_arch.py
# (mm_vision_tower, mm_audio_encoder), multimodal_encoder/builder.py (use_s2; build_audio_encoder: freeze_audio_encoder,
# freeze_audio_encoder_adapter, audio_prompt_finetune, audio_prompt_num), multimodal_projector/builder.py
# (mm_projector_type, mm_hidden_size, hidden_size), process_images (image_aspect_ratio)
UPSTREAM_FIELDS = ("mm_vision_tower", "mm_audio_encoder", "use_s2", "freeze_audio_encoder", "freeze_audio_encoder_adapter",
                   "audio_prompt_finetune", "audio_prompt_num", "mm_projector_type", "mm_hidden_size", "hidden_size",
                   "image_aspect_ratio")


def test_fo_export_config_has_every_field_upstream_reads(imported, tmp_path):
    """A vita-fo-Qwen2 export: audio_prompt_finetune true with audio_prompt_num (upstream builds the prompts only
    then); re-imported, the prompt count is the same."""
    from vita.interop.convert import convert

    vm = imported("vita-fo-Qwen2")
    assert vm.model.audio_prompt_num == 3
    exp = convert(vm.imported.model.tokenizer, tmp_path / "exp")
    back = export_vita(exp, tmp_path / "back", progress=False)
    config = json.loads((back / "config.json").read_text())
    assert [k for k in UPSTREAM_FIELDS if k not in config] == []
    assert config["audio_prompt_finetune"] is True and config["audio_prompt_num"] == 3
    assert config["model_type"] == "vita-fo-Qwen2"
    assert compose_from_vita(back)[0].model.audio.prompt_num == 3


def test_fo_folder_without_predictor_head_imports_with_a_note(folders, tmp_path):
    """Upstream's FO class hard-codes predict_usr_state = 0: its folders hold no predictor_head though config.json
    says 2. They import without the head, said in the one-line summary; a folder with a head keeps it."""
    imp, wf = compose_from_vita(folders["vita-fo-Qwen2"])
    assert "predictor_head.weight" not in wf.tensors
    assert imp.model.state_head_classes == 0
    line = imp.summary()
    assert "\n" not in line and "predict_usr_state" in line and "no predictor_head" in line
    vm = load_vita(folders["vita-fo-Qwen2"], progress=False)
    assert vm.model.state_head is None
    with_head = make_vita_folder(tmp_path / "head", "vita-fo-Qwen2", seed=5, state_head=True)
    vm = load_vita(with_head, progress=False)
    assert vm.model.state_head is not None and vm.model.state_head.out_features == 3
    assert torch.equal(vm.model.state_head.weight, read_all(with_head)["predictor_head.weight"])
    assert "predict_usr_state" not in vm.imported.summary()


@pytest.mark.parametrize("mt", FAMILIES)
def test_text_logits_equal_plain_transformers(mt, folders, imported, tmp_path):
    from transformers import AutoModelForCausalLM

    from vita.interop import is_vita_folder

    hf = llm_only_folder(folders[mt], tmp_path / "hf")
    assert is_vita_folder(folders[mt]) and not is_vita_folder(hf)
    ref = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    ref.eval()
    vm = imported(mt)
    assert vm.template == ("mixtral" if mt == "vita-mixtral" else "qwen2.5")
    ids = _ids()
    with torch.no_grad():
        want = ref(input_ids=ids).logits
        embeds, _ = vm.model.embed(ids)  # the omni path: every encoder tied in at zero
        got = vm.model.llm(inputs_embeds=embeds).logits
    assert (got - want).abs().max().item() <= 1e-6


@pytest.mark.parametrize("mt", FAMILIES)
def test_image_audio_sample_forward_backward(mt, imported):
    vm = imported(mt)
    model = vm.model
    model.train()
    n_img, n_aud = model.tokens_per_tile, model.audio_num_tokens(120)
    text = vm.tokenizer("hello there, how are you doing today?", return_tensors="pt").input_ids[0]
    assert not set(text.tolist()) & {model.image_token_id, model.video_token_id, model.audio_token_id}
    ids = torch.cat([text[:2], torch.full((n_img,), model.image_token_id), text[2:3],
                     torch.full((n_aud,), model.audio_token_id), text[3:]]).unsqueeze(0)
    labels = ids.clone()
    labels[(ids == model.image_token_id) | (ids == model.audio_token_id)] = -100
    if model.state_head is not None:  # FO: a user-state label on the last audio position
        labels[0, 2 + n_img + n_aud] = -101
    g = torch.Generator().manual_seed(0)
    out = model(input_ids=ids, labels=labels, pixel_values=torch.randn(1, 3, 56, 56, generator=g),
                audio_features=torch.randn(1, 120, 80, generator=g) + 12, audio_lengths=torch.tensor([120]))
    loss = out["ce_sum"] / out["num_tokens"] + sum(out["aux"].values())
    loss.backward()
    for group in ("vision_tower", "vision_projector", "audio_encoder", "audio_projector", "llm"):
        grads = [p.grad for p in model.module_groups()[group].parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(gr).all() for gr in grads), group
        assert sum(gr.abs().sum() for gr in grads) > 0, group
    if model.state_head is not None:
        assert "state" in out["aux"] and model.state_head.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    model.eval()


def test_config_fields_vita_cannot_honour_are_named(folders, caplog):
    imp, _ = compose_from_vita(folders["vita-Qwen2"])
    line = imp.summary()
    for k in ("tune_mm_mlp_adapter", "freeze_audio_encoder", "unfreeze_vision_tower"):
        assert k in line
    assert "\n" not in line and imp.data_overrides["image_aspect_ratio"] == "square"
    assert imp.model.vision.overrides.num_attention_heads == 2  # from the tower's config.json beside the folder
    assert imp.model.audio.overrides.heads == 2 and imp.model.audio.overrides.layers == 2  # from pos_bias_u / keys
    assert imp.hydra_overrides()[0] == "model=vita15_qwen2p5_7b"
    from vita.interop.config_map import model_config_from_vita

    config = json.loads((folders["vita-Qwen2"] / "config.json").read_text())
    odd = model_config_from_vita(folders["vita-Qwen2"], _, {**config, "mm_speech_decoder": "x", "use_s2": True})
    assert "mm_speech_decoder (neither a VITA field" in odd.summary() and "use_s2" in odd.summary()


# -- the full-size key list --------------------------------------------------------------------------
def _vita15_keys() -> dict[str, tuple[int, ...]]:
    """VITA-1.5's checkpoint keys and shapes, written out from its published configuration
    (Qwen2.5-7B, InternViT-300M-448px, mlp2x_gelu 4096 -> 3584, whale 24 x 1024, subsampling adapter)."""
    d, f, kv, vocab = 3584, 18944, 512, 152064
    k: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, d), "model.norm.weight": (d,),
                                     "lm_head.weight": (vocab, d)}
    for i in range(28):
        p = f"model.layers.{i}."
        k |= {p + "self_attn.q_proj.weight": (d, d), p + "self_attn.q_proj.bias": (d,),
              p + "self_attn.k_proj.weight": (kv, d), p + "self_attn.k_proj.bias": (kv,),
              p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.v_proj.bias": (kv,),
              p + "self_attn.o_proj.weight": (d, d), p + "mlp.gate_proj.weight": (f, d), p + "mlp.up_proj.weight": (f, d),
              p + "mlp.down_proj.weight": (d, f), p + "input_layernorm.weight": (d,),
              p + "post_attention_layernorm.weight": (d,)}
    v = "model.vision_tower.vision_tower."
    k |= {v + "embeddings.class_embedding": (1, 1, 1024), v + "embeddings.patch_embedding.weight": (1024, 3, 14, 14),
          v + "embeddings.patch_embedding.bias": (1024,), v + "embeddings.position_embedding": (1, 1025, 1024)}
    for i in range(24):
        p = f"{v}encoder.layers.{i}."
        k |= {p + "attn.qkv.weight": (3072, 1024), p + "attn.qkv.bias": (3072,), p + "attn.proj.weight": (1024, 1024),
              p + "attn.proj.bias": (1024,), p + "ls1": (1024,), p + "ls2": (1024,), p + "norm1.weight": (1024,),
              p + "norm1.bias": (1024,), p + "norm2.weight": (1024,), p + "norm2.bias": (1024,),
              p + "mlp.fc1.weight": (4096, 1024), p + "mlp.fc1.bias": (4096,), p + "mlp.fc2.weight": (1024, 4096),
              p + "mlp.fc2.bias": (1024,)}
    k |= {"model.mm_projector.0.weight": (d, 4096), "model.mm_projector.0.bias": (d,),
          "model.mm_projector.2.weight": (d, d), "model.mm_projector.2.bias": (d,)}
    e = "model.audio_encoder.encoder."
    c = e + "enc.0.core."  # Subsampling.core = Conv2dSubsampling4 (whale/module/component/subsampling.py)
    k |= {e + "global_cmvn.mean": (80,), e + "global_cmvn.istd": (80,), c + "conv.0.weight": (1024, 1, 3, 3),
          c + "conv.0.bias": (1024,), c + "conv.2.weight": (1024, 1024, 3, 3), c + "conv.2.bias": (1024,),
          c + "out.0.weight": (1024, 19 * 1024), c + "out.0.bias": (1024,),
          e + "enc.1.embed.0.weight": (1024, 1024), e + "enc.1.embed.0.bias": (1024,), e + "enc.1.embed.1.weight": (1024,),
          e + "enc.1.embed.1.bias": (1024,), e + "enc.1.after_norm.weight": (1024,), e + "enc.1.after_norm.bias": (1024,)}
    for i in range(24):
        p = f"{e}enc.1.encoders.{i}."
        for lin in ("linear_q", "linear_k", "linear_v", "linear_out"):
            k |= {f"{p}self_attn.{lin}.weight": (1024, 1024), f"{p}self_attn.{lin}.bias": (1024,)}
        k |= {p + "self_attn.linear_pos.weight": (1024, 1024), p + "self_attn.pos_bias_u": (16, 64),
              p + "self_attn.pos_bias_v": (16, 64), p + "feed_forward.w_1.weight": (4096, 1024),
              p + "feed_forward.w_1.bias": (4096,), p + "feed_forward.w_2.weight": (1024, 4096),
              p + "feed_forward.w_2.bias": (1024,), p + "norm1.weight": (1024,), p + "norm1.bias": (1024,),
              p + "norm2.weight": (1024,), p + "norm2.bias": (1024,)}
    a = "model.audio_encoder.adpter."
    k |= {a + "conv1d2.weight": (2048, 1024, 5), a + "conv1d2.bias": (2048,), a + "bn2.weight": (2048,),
          a + "bn2.bias": (2048,), a + "project.weight": (d, 2048), a + "project.bias": (d,)}
    return k


def test_full_size_vita15_maps_one_to_one_to_vitas_keys():
    """vita15_qwen2p5_7b on the meta device: every vita tensor has exactly one VITA home and every VITA-1.5 key
    is produced, with the same element counts; the total is the published ~8.32 B."""
    from omegaconf import OmegaConf

    from vita.config import CONF_DIR, ModelConfig
    from vita.interop.keys import model_tensors, plan_keys
    from vita.interop.meta import params_on_meta
    from vita.model import build_model

    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(CONF_DIR / "model" / "vita15_qwen2p5_7b.yaml"),
                          {"pretrained": None, "vision": {"pretrained": None}, "audio": {"pretrained": None}})
    with params_on_meta():
        model = build_model(cfg)
    plan = plan_keys(model)  # raises on any vita tensor without a VITA name
    expected = _vita15_keys()
    assert sorted(set(plan.vita15_shapes) - set(expected)) == [] and sorted(set(expected) - set(plan.vita15_shapes)) == []
    assert {k: tuple(s) for k, s in plan.vita15_shapes.items()} == expected
    vita_side = model_tensors(model)
    assert set(plan.by_vita()) == set(vita_side)  # every vita tensor is linked
    n_vita = sum(t.numel() for t in vita_side.values())
    n_vita15 = sum(torch.Size(s).numel() for s in expected.values())
    assert n_vita == n_vita15 == plan.numel()
    assert 8.30e9 <= n_vita15 <= 8.34e9, n_vita15


# -- stage outputs: mm_projector.bin, audio_adpter.bin ------------------------------------------------
def test_stage_output_bins_load_into_their_group_only_when_allowed(folders, tmp_path):
    from vita.model.init_from import load_init  # what stage.init_from=vita:... calls on a built model

    src = read_all(folders["vita-Qwen2"])
    proj = {k: v.clone() * 2 for k, v in src.items() if k.startswith("model.mm_projector.")}
    adp = {k.removeprefix("model."): v.clone() * 3 for k, v in src.items() if k.startswith("model.audio_encoder.adpter.")}
    torch.save(proj, tmp_path / "mm_projector.bin")
    torch.save(adp, tmp_path / "audio_adpter.bin")
    model = load_vita(folders["vita-Qwen2"], progress=False).model
    before_llm = model.llm.lm_head.weight.clone()
    with pytest.raises(CheckpointError, match=r"mm_projector\.bin.*weights_only"):
        load_group_file(model, tmp_path / "mm_projector.bin")
    assert load_group_file(model, tmp_path / "mm_projector.bin", allow_bin=True) == ["vision_projector"]
    assert torch.equal(model.vision_projector.layers[0].weight, proj["model.mm_projector.0.weight"])
    assert load_init(model, f"vita:{tmp_path}", allow_bin=True) == ["vision_projector", "audio_projector"]
    assert torch.equal(model.audio_projector.conv1d.weight, adp["audio_encoder.adpter.conv1d2.weight"])
    assert torch.equal(model.llm.lm_head.weight, before_llm)
    (tmp_path / "bad").mkdir()
    torch.save({**proj, "model.mm_projector.2.weight": torch.zeros(3, 3)}, tmp_path / "bad" / "mm_projector.bin")
    with pytest.raises(CheckpointError, match=r"mm_projector\.2\.weight is \[3, 3\] in mm_projector\.bin"):
        load_group_file(model, tmp_path / "bad" / "mm_projector.bin", allow_bin=True)


# -- bad input: one error each, naming the file or key --------------------------------------------------
def _copy(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "VITA_ckpt"
    shutil.copytree(folder, dst)
    return dst


def _shard_with(folder: Path, key: str) -> Path:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    return folder / index["weight_map"][key]


def _rewrite(shard: Path, fn) -> None:
    sd = load_file(str(shard))
    fn(sd)
    save_file(sd, str(shard), metadata={"format": "pt"})


def _edit_index(folder: Path, fn) -> None:
    f = folder / "model.safetensors.index.json"
    index = json.loads(f.read_text())
    fn(index["weight_map"])
    f.write_text(json.dumps(index))


def test_missing_shard(folders, tmp_path):
    d = _copy(folders["vita-Qwen2"], tmp_path)
    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"names shard\(s\) model-00002-of-00002\.safetensors that are not in"):
        load_vita(d, progress=False)


def test_index_naming_an_absent_shard(folders, tmp_path):
    d = _copy(folders["vita-Qwen2"], tmp_path)
    _edit_index(d, lambda wm: wm.__setitem__("model.norm.weight", "model-00003-of-00002.safetensors"))
    with pytest.raises(CheckpointError, match=r"model-00003-of-00002\.safetensors that are not in"):
        load_vita(d, progress=False)


def test_renamed_key(folders, tmp_path):
    d = _copy(folders["vita-Qwen2"], tmp_path)
    key = "model.audio_encoder.adpter.project.weight"
    shard = _shard_with(d, key)
    _rewrite(shard, lambda sd: sd.__setitem__("model.audio_encoder.adapter.project.weight", sd.pop(key)))
    _edit_index(d, lambda wm: wm.__setitem__("model.audio_encoder.adapter.project.weight", wm.pop(key)))
    with pytest.raises(CheckpointError) as e:
        load_vita(d, progress=False)
    msg = str(e.value)
    assert f"missing 1: {key}" in msg and f"model.audio_encoder.adapter.project.weight (in {shard.name})" in msg


def test_wrong_shape(folders, tmp_path):
    d = _copy(folders["vita-Qwen2"], tmp_path)
    key = "model.layers.1.mlp.up_proj.weight"
    shard = _shard_with(d, key)
    _rewrite(shard, lambda sd: sd.__setitem__(key, torch.zeros(7, H)))
    with pytest.raises(CheckpointError, match=rf"{key} is \[7, {H}\] in {shard.name}, the model expects \[128, {H}\]"):
        load_vita(d, progress=False)


def test_unknown_model_type(folders, tmp_path):
    d = _copy(folders["vita-Qwen2"], tmp_path)
    c = json.loads((d / "config.json").read_text())
    c["model_type"] = "vita-Qwen3"
    (d / "config.json").write_text(json.dumps(c))
    with pytest.raises(ConfigError, match=r"model_type 'vita-Qwen3' is not a VITA model type.*vita-Qwen2"):
        load_vita(d, progress=False)


def test_key_the_index_places_in_the_wrong_shard(folders, tmp_path):
    d = _copy(folders["vita-Qwen2"], tmp_path)
    _edit_index(d, lambda wm: wm.__setitem__("model.ghost.weight", "model-00001-of-00002.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.ghost\.weight \(in model-00001-of-00002\.safetensors\)"):
        load_vita(d, progress=False)


def test_non_safetensors_weights_refused_unless_allowed(folders, tmp_path):
    d = _copy(folders["vita-Qwen2"], tmp_path)
    sd = read_all(d)
    for f in [*d.glob("model*.safetensors"), d / "model.safetensors.index.json"]:
        f.unlink()
    torch.save(sd, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: a pickled weight file.*weights_only"):
        load_vita(d, progress=False)
    vm = load_vita(d, allow_bin=True, progress=False)
    assert torch.equal(vm.model.llm.lm_head.weight, sd["lm_head.weight"])


def test_export_needs_a_vita_export(tmp_path):
    with pytest.raises(CheckpointError, match="neither a vita export"):
        export_vita(tmp_path, tmp_path / "out")


def test_bf16_import_runs_image_and_audio(folders):
    """dtype=bfloat16 (as VITA ships): parameters in bf16, fp32 CMVN statistics still fit the bf16 encoder."""
    vm = load_vita(folders["vita-Qwen2"], dtype="bfloat16", progress=False)
    m = vm.model
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    ids = torch.cat([torch.tensor([10, 11]), torch.full((m.tokens_per_tile,), m.image_token_id),
                     torch.full((m.audio_num_tokens(100),), m.audio_token_id), torch.tensor([12, 13])]).unsqueeze(0)
    labels = torch.where(ids < 10, torch.full_like(ids, -100), ids)
    out = m(input_ids=ids, labels=labels, pixel_values=torch.randn(1, 3, 56, 56), audio_features=torch.randn(1, 100, 80),
            audio_lengths=torch.tensor([100]))
    assert torch.isfinite(out["ce_sum"]) and out["num_tokens"] == 3


def test_a_tensor_in_two_shards(folders, tmp_path):
    d = _copy(folders["vita-Qwen2"], tmp_path)
    key = "model.norm.weight"
    shard = _shard_with(d, key)
    other = next(p for p in d.glob("model-*.safetensors") if p != shard)
    value = load_file(str(shard))[key]
    _rewrite(other, lambda sd: sd.__setitem__(key, value))
    with pytest.raises(CheckpointError, match=rf"tensor {key} is in two shards"):
        load_vita(d, progress=False)


def test_init_from_a_missing_vita_path_fails_first(tmp_path):
    from hydra import compose, initialize_config_dir

    from vita.config import CONF_DIR, register_configs, register_resolvers
    from vita.run import train

    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"stage.init_from=vita:{tmp_path}/absent", f"output_root={tmp_path}"])
    with pytest.raises(CheckpointError, match=r"stage\.init_from=vita:.*absent: no such folder or file"):
        train(cfg, run_dir=tmp_path / "run")
