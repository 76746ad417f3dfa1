"""Tiny checkpoints in VITA's exact layout (config fields, key names, two shards + index).

Built here from upstream's module structure (VITA-MLLM/VITA, VITA-1.5 read at commit 35d064a; each
part below names the upstream file whose modules give its key names), not with vita's own export
code, so an import -> export round trip is checked against an independent layout:

* LLM keys as transformers 4 writes them under ``VITAQwen2ForCausalLM`` / ``VITAFOQwen2ForCausalLM``
  / ``VITAMixtralForCausalLM`` (vita/model/language_model/*.py: ``model.*`` + ``lm_head``; Mixtral's
  per-expert ``block_sparse_moe.experts.E.w1/w2/w3``);
* InternViT (vita/model/multimodal_encoder/internvit/modeling_intern_vit.py: fused ``attn.qkv``,
  ``ls1``, ``norm1`` ...) as ``InternViTVisionTower.vision_tower`` (internvit_encoder.py), under
  ``model.vision_tower.vision_tower.``;
* ``model.mm_projector.{0,2}`` (vita/model/multimodal_projector/builder.py: mlp2x_gelu =
  Sequential(Linear, GELU, Linear));
* the whale encoder and adapter under ``model.audio_encoder.`` (see the table above
  :func:`audio_tensors`), with the Conv2d subsampling under ``enc.0.core``;
* FO (vita/model/language_model/vita_fo_qwen2.py): ``VITAFOQwen2ForCausalLM`` hard-codes
  ``predict_usr_state = 0``, so an upstream-saved FO folder has no ``predictor_head``; its audio
  prompts exist only with ``audio_prompt_finetune: true`` (init_model.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from vita.config import ASSETS

H, VOCAB, FFN, LAYERS, HEADS, KV = 64, 1040, 128, 2, 4, 2
VIT = dict(hidden=32, heads=2, ffn=64, layers=2, image=56, patch=14)
AUD = dict(d=32, heads=2, ffn=64, layers=2, n_mels=80)
EXPERTS = 3


def _rand(*shape, scale=0.05, g=None):
    return torch.randn(*shape, generator=g) * scale


def llm_tensors(kind: str, g: torch.Generator) -> dict[str, torch.Tensor]:
    sd = {"model.embed_tokens.weight": _rand(VOCAB, H, g=g), "model.norm.weight": 1 + _rand(H, g=g),
          "lm_head.weight": _rand(VOCAB, H, g=g)}
    hd = H // HEADS
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        sd |= {p + "self_attn.q_proj.weight": _rand(H, H, g=g), p + "self_attn.k_proj.weight": _rand(KV * hd, H, g=g),
               p + "self_attn.v_proj.weight": _rand(KV * hd, H, g=g), p + "self_attn.o_proj.weight": _rand(H, H, g=g),
               p + "input_layernorm.weight": 1 + _rand(H, g=g), p + "post_attention_layernorm.weight": 1 + _rand(H, g=g)}
        if kind == "qwen2":
            sd |= {p + "self_attn.q_proj.bias": _rand(H, g=g), p + "self_attn.k_proj.bias": _rand(KV * hd, g=g),
                   p + "self_attn.v_proj.bias": _rand(KV * hd, g=g)}
        if kind == "mixtral":
            sd[p + "block_sparse_moe.gate.weight"] = _rand(EXPERTS, H, scale=0.5, g=g)
            for e in range(EXPERTS):
                q = f"{p}block_sparse_moe.experts.{e}."
                sd |= {q + "w1.weight": _rand(FFN, H, g=g), q + "w2.weight": _rand(H, FFN, g=g),
                       q + "w3.weight": _rand(FFN, H, g=g)}
        else:
            sd |= {p + "mlp.gate_proj.weight": _rand(FFN, H, g=g), p + "mlp.up_proj.weight": _rand(FFN, H, g=g),
                   p + "mlp.down_proj.weight": _rand(H, FFN, g=g)}
    return sd


def vision_tensors(g: torch.Generator) -> dict[str, torch.Tensor]:
    """InternVisionModel (internvit/modeling_intern_vit.py: ``embeddings.{class_embedding, patch_embedding,
    position_embedding}``, ``encoder.layers.i.{attn.qkv, attn.proj, ls1, ls2, norm1, norm2, mlp.fc1, mlp.fc2}``)
    + the mlp2x_gelu projector (multimodal_projector/builder.py: indices 0 and 2 are the Linears)."""
    c, f, pch = VIT["hidden"], VIT["ffn"], VIT["patch"]
    n_pos = (VIT["image"] // pch) ** 2 + 1
    pre = "model.vision_tower.vision_tower."
    sd = {pre + "embeddings.class_embedding": _rand(1, 1, c, g=g),
          pre + "embeddings.patch_embedding.weight": _rand(c, 3, pch, pch, g=g),
          pre + "embeddings.patch_embedding.bias": _rand(c, g=g),
          pre + "embeddings.position_embedding": _rand(1, n_pos, c, g=g)}
    for i in range(VIT["layers"]):
        p = f"{pre}encoder.layers.{i}."
        sd |= {p + "attn.qkv.weight": _rand(3 * c, c, g=g), p + "attn.qkv.bias": _rand(3 * c, g=g),
               p + "attn.proj.weight": _rand(c, c, g=g), p + "attn.proj.bias": _rand(c, g=g),
               p + "ls1": 0.5 + _rand(c, g=g), p + "ls2": 0.5 + _rand(c, g=g),
               p + "norm1.weight": 1 + _rand(c, g=g), p + "norm1.bias": _rand(c, g=g),
               p + "norm2.weight": 1 + _rand(c, g=g), p + "norm2.bias": _rand(c, g=g),
               p + "mlp.fc1.weight": _rand(f, c, g=g), p + "mlp.fc1.bias": _rand(f, g=g),
               p + "mlp.fc2.weight": _rand(c, f, g=g), p + "mlp.fc2.bias": _rand(c, g=g)}
    mm = 4 * c
    sd |= {"model.mm_projector.0.weight": _rand(H, mm, g=g), "model.mm_projector.0.bias": _rand(H, g=g),
           "model.mm_projector.2.weight": _rand(H, H, g=g), "model.mm_projector.2.bias": _rand(H, g=g)}
    return sd


# -- the audio encoder, module by module as upstream builds it ---------------------------------------
# Upstream files (VITA-MLLM/VITA; VITA-1.5 read at commit 35d064a, the same modules as in the stored
# VITA-1.0 snapshot 360de22), under vita/model/multimodal_encoder/whale/:
#   init_model.py                      AudioEncoder: .encoder (whaleEncoder), .adpter (CNNSubsampling),
#                                      .prompt_embeddings = nn.Embedding(audio_prompt_num, llm_embed_dim)
#                                      only when audio_prompt_finetune is set
#   module/encoder/encoder.py          whaleEncoder: .global_cmvn, .enc = ModuleList of the components of
#                                      encoder-layer-config "subsampling-transformer"
#   cmvn.py                            GlobalCMVN: buffers mean, istd
#   module/component/subsampling.py    Subsampling: .core = Conv2dSubsampling4 (.conv = Sequential(Conv2d,
#                                      ReLU, Conv2d, ReLU), .out = Sequential(Linear)) -> enc.0.core.conv.{0,2},
#                                      enc.0.core.out.0
#   module/component/transformer.py    Transformer: .embed = Sequential(Linear, LayerNorm, Dropout, ReLU),
#                                      .encoders (TransformerLayer: self_attn, feed_forward, norm1, norm2),
#                                      .after_norm; the positional table is a plain attribute, not saved
#   module/layer/attention.py          MultiHeadedAttention (rel-enc): linear_q/k/v/out, linear_pos (no bias),
#                                      pos_bias_u/v [heads, d_k]; PositionwiseFeedForward: w_1, w_2
#   adapter.py                         CNNSubsampling, one-conv branch (enc_out_dim * 4 >= llm_embed_dim, as
#                                      VITA-1.5's 1024 * 4 >= 3584): conv1d2, bn2 (LayerNorm), project
def _linear(prefix: str, out_f: int, in_f: int, g, bias: bool = True) -> dict[str, torch.Tensor]:
    return {prefix + "weight": _rand(out_f, in_f, g=g), **({prefix + "bias": _rand(out_f, g=g)} if bias else {})}


def _layer_norm(prefix: str, n: int, g) -> dict[str, torch.Tensor]:
    return {prefix + "weight": 1 + _rand(n, g=g), prefix + "bias": _rand(n, g=g)}


def _subsampling(prefix: str, n_mels: int, d: int, g) -> dict[str, torch.Tensor]:
    """``Subsampling`` (subsampling.py): its ``core`` is ``Conv2dSubsampling4``."""
    core = prefix + "core."
    f = ((n_mels - 1) // 2 - 1) // 2
    return {core + "conv.0.weight": _rand(d, 1, 3, 3, g=g), core + "conv.0.bias": _rand(d, g=g),
            core + "conv.2.weight": _rand(d, d, 3, 3, g=g), core + "conv.2.bias": _rand(d, g=g),
            **_linear(core + "out.0.", d, d * f, g)}


def _transformer(prefix: str, d: int, heads: int, ffn: int, layers: int, g) -> dict[str, torch.Tensor]:
    """``Transformer`` (transformer.py) with rel-enc ``MultiHeadedAttention`` (attention.py)."""
    sd = {**_linear(prefix + "embed.0.", d, d, g), **_layer_norm(prefix + "embed.1.", d, g)}
    for i in range(layers):
        p = f"{prefix}encoders.{i}."
        for lin in ("linear_q", "linear_k", "linear_v", "linear_out"):
            sd |= _linear(f"{p}self_attn.{lin}.", d, d, g)
        sd |= _linear(p + "self_attn.linear_pos.", d, d, g, bias=False)
        sd |= {p + "self_attn.pos_bias_u": _rand(heads, d // heads, g=g),
               p + "self_attn.pos_bias_v": _rand(heads, d // heads, g=g)}
        sd |= _linear(p + "feed_forward.w_1.", ffn, d, g) | _linear(p + "feed_forward.w_2.", d, ffn, g)
        sd |= _layer_norm(p + "norm1.", d, g) | _layer_norm(p + "norm2.", d, g)
    return sd | _layer_norm(prefix + "after_norm.", d, g)


def audio_tensors(g: torch.Generator, prompt_num: int = 0) -> dict[str, torch.Tensor]:
    """``model.audio_encoder.*`` of a VITA-1.5 checkpoint: ``AudioEncoder`` (init_model.py) = whaleEncoder
    (encoder.py: ``global_cmvn`` + ``enc.0`` Subsampling + ``enc.1`` Transformer) + ``adpter`` (+ prompts)."""
    d, n = AUD["d"], AUD["n_mels"]
    e = "model.audio_encoder.encoder."
    sd = {e + "global_cmvn.mean": 10 + _rand(n, scale=1.0, g=g), e + "global_cmvn.istd": 0.3 + _rand(n, scale=0.01, g=g)}
    sd |= _subsampling(e + "enc.0.", n, d, g)
    sd |= _transformer(e + "enc.1.", d, AUD["heads"], AUD["ffn"], AUD["layers"], g)
    a = "model.audio_encoder.adpter."
    sd |= {a + "conv1d2.weight": _rand(2 * d, d, 5, g=g), a + "conv1d2.bias": _rand(2 * d, g=g),
           **_layer_norm(a + "bn2.", 2 * d, g), **_linear(a + "project.", H, 2 * d, g)}
    if prompt_num:
        sd["model.audio_encoder.prompt_embeddings.weight"] = _rand(prompt_num, H, g=g)
    return sd


def llm_config(kind: str) -> dict:
    """The LLM part of config.json, as transformers 4.41 (VITA's pin) writes it."""
    c = {"hidden_size": H, "intermediate_size": FFN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
         "num_key_value_heads": KV, "vocab_size": VOCAB, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
         "rope_theta": 1000000.0, "hidden_act": "silu", "initializer_range": 0.02, "tie_word_embeddings": False,
         "bos_token_id": 1, "eos_token_id": 2, "attention_dropout": 0.0, "torch_dtype": "float32",
         "transformers_version": "4.41.1", "use_cache": True}
    if kind == "qwen2":
        c |= {"use_sliding_window": False, "sliding_window": 2048, "max_window_layers": 28}
    if kind == "mixtral":
        c |= {"num_local_experts": EXPERTS, "num_experts_per_tok": 2, "router_aux_loss_coef": 0.02,
              "output_router_logits": False, "sliding_window": None, "rms_norm_eps": 1e-5}
    return c


FAMILY = {"vita-Qwen2": ("qwen2", "VITAQwen2ForCausalLM"), "vita-fo-Qwen2": ("qwen2", "VITAFOQwen2ForCausalLM"),
          "vita-mixtral": ("mixtral", "VITAMixtralForCausalLM")}


def write_shards(folder: Path, sd: dict[str, torch.Tensor], n: int = 2) -> None:
    names = sorted(sd)
    per = (len(names) + n - 1) // n
    weight_map = {}
    for i in range(n):
        fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        part = {k: sd[k].contiguous() for k in names[i * per:(i + 1) * per]}
        save_file(part, str(folder / fname), metadata={"format": "pt"})
        weight_map |= {k: fname for k in part}
    total = sum(t.numel() * t.element_size() for t in sd.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}))


def make_vita_folder(root: Path, model_type: str = "vita-Qwen2", seed: int = 0, vision: bool = True,
                     audio: bool = True, state_head: bool = False) -> Path:
    """``root/VITA_ckpt`` (+ ``root/InternViT-300M-448px/config.json``, as in VITA's release).

    Args:
        state_head: (FO) add a 3-class ``predictor_head``, as a vita-trained FO model exports it;
            upstream's FO class never builds one (``predict_usr_state = 0``).
    """
    kind, arch = FAMILY[model_type]
    g = torch.Generator().manual_seed(seed)
    folder = root / "VITA_ckpt"
    folder.mkdir(parents=True, exist_ok=True)
    fo = model_type == "vita-fo-Qwen2"
    sd = llm_tensors(kind, g)
    config = {"architectures": [arch], "model_type": model_type, **llm_config(kind)}
    if vision:
        sd |= vision_tensors(g)
        tower = root / "InternViT-300M-448px"
        tower.mkdir(exist_ok=True)
        (tower / "config.json").write_text(json.dumps({
            "architectures": ["InternVisionModel"], "hidden_size": VIT["hidden"], "num_attention_heads": VIT["heads"],
            "intermediate_size": VIT["ffn"], "num_hidden_layers": VIT["layers"], "image_size": VIT["image"],
            "patch_size": VIT["patch"], "qkv_bias": True, "norm_type": "layer_norm", "layer_norm_eps": 1e-6,
            "qk_normalization": False, "drop_path_rate": 0.1, "model_type": "intern_vit_6b"}))
        config |= {"mm_vision_tower": "/mnt/cfs/VITA/InternViT-300M-448px", "mm_hidden_size": 4 * VIT["hidden"],
                   "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -1, "mm_vision_select_feature": "patch",
                   "image_aspect_ratio": "square", "use_mm_proj": True, "mm_use_im_start_end": False,
                   "mm_use_im_patch_token": False, "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False,
                   "mm_projector_lr": None, "unfreeze_vision_tower": False, "use_s2": False}
    if audio:
        sd |= audio_tensors(g, prompt_num=3 if fo else 0)
        config |= {"mm_audio_encoder": "/mnt/cfs/VITA/audio-encoder-Qwen2-7B-1107-weight-base-11wh-tunning",
                   "freeze_audio_encoder": True, "freeze_audio_encoder_adapter": True, "tune_audio_mlp_adapter": False,
                   "audio_prompt_finetune": False, "audio_prompt_num": None, "audio_state_predictor_tuning": False}
        if fo:  # upstream builds prompt_embeddings only with audio_prompt_finetune (init_model.py)
            config |= {"audio_prompt_finetune": True, "audio_prompt_num": 3}
    if fo:
        config["predict_usr_state"] = 2  # written by VITA's FO runs, ignored by its class (vita_fo_qwen2.py)
    if state_head:
        sd |= {"predictor_head.weight": _rand(3, H, g=g), "predictor_head.bias": _rand(3, g=g)}
    config |= {"tokenizer_model_max_length": 6200, "tokenizer_padding_side": "right"}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    write_shards(folder, sd)
    for f in (ASSETS / "tokenizers" / "chatterbot-bpe").glob("tokenizer*.json"):
        shutil.copyfile(f, folder / f.name)
    return folder


def llm_only_folder(vita_folder: Path, out: Path) -> Path:
    """A plain transformers folder from the VITA folder's LLM keys (model.embed_tokens/layers/norm, lm_head)."""
    from vita.interop.exporter import read_all

    config = json.loads((vita_folder / "config.json").read_text())
    kind = FAMILY[config["model_type"]][0]
    hf = {k: v for k, v in config.items() if not k.startswith(("mm_", "tune_", "freeze_", "audio_", "tokenizer_"))
          and k not in ("image_aspect_ratio", "use_mm_proj", "unfreeze_vision_tower", "predict_usr_state")}
    hf |= {"model_type": kind, "architectures": [{"qwen2": "Qwen2ForCausalLM", "mixtral": "MixtralForCausalLM"}[kind]]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf))
    llm = {k: v for k, v in read_all(vita_folder).items()
           if k.startswith(("model.embed_tokens.", "model.layers.", "model.norm.")) or k == "lm_head.weight"}
    save_file(llm, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
