"""VITA's ``config.json`` <-> vita's model config (``conf/model`` entry + overrides).

Import (:func:`model_config_from_vita`): ``model_type`` picks the ``conf/model`` entry
(:data:`FAMILIES`); the LLM fields become ``model.overrides``; the tower, encoder, adapter and
head shapes come from the weight shapes in the shard headers (InternViT's head count, which
weights cannot tell, from the tower's own ``config.json`` at ``mm_vision_tower`` or the
``mm_vision_tower_config`` block vita writes). Fields vita cannot honour are named in one log line.

Export (:func:`vita_config_from_model`): the LLM's HF config + VITA's ``model_type``,
``architectures`` and ``mm_*`` / audio fields, with transformers-4 spellings (``rope_theta``,
``torch_dtype``) that VITA's pinned loader reads.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vita.errors import CheckpointError, ConfigError
from vita.interop.keys import VISION
from vita.interop.shards import WeightFiles

log = logging.getLogger("vita")


@dataclass(frozen=True)
class Family:
    """One VITA model type: its ``conf/model`` entry and VITA's class name."""

    conf: str
    architecture: str
    hf_model_type: str
    template: str
    """vita's chat template for it (``vita.data.templates``)."""


FAMILIES = {
    "vita-Qwen2": Family("vita15_qwen2p5_7b", "VITAQwen2ForCausalLM", "qwen2", "qwen2.5"),
    "vita-fo-Qwen2": Family("vita15_fo_qwen2p5_7b", "VITAFOQwen2ForCausalLM", "qwen2", "qwen2.5"),
    "vita-mixtral": Family("vita10_mixtral_8x7b", "VITAMixtralForCausalLM", "mixtral", "mixtral"),
    "vita-Mistral": Family("vita_nemo_12b", "VITAMistralForCausalLM", "mistral", "nemo"),
}
BACKBONE_FAMILY = {"qwen2.5-7b": "vita-Qwen2", "qwen2.5-fo-7b": "vita-fo-Qwen2", "mixtral-8x7b": "vita-mixtral",
                   "mistral-nemo-12b": "vita-Mistral", "tiny-qwen2": "vita-Qwen2", "tiny-qwen2.5-fo": "vita-fo-Qwen2",
                   "tiny-mixtral": "vita-mixtral", "tiny-mistral-nemo": "vita-Mistral", "qwen2.5-0.5b": "vita-Qwen2",
                   "qwen2.5-1.5b": "vita-Qwen2"}

# VITA fields that vita reads (the rest of VITA's own fields are reported as not honoured)
MM_FIELDS = {"mm_vision_tower", "mm_hidden_size", "mm_projector_type", "mm_vision_select_layer",
             "mm_vision_select_feature", "mm_audio_encoder", "image_aspect_ratio", "use_mm_proj", "audio_prompt_num",
             "predict_usr_state", "tokenizer_model_max_length", "tokenizer_padding_side", "mm_vision_tower_config"}
TRAINING_FLAGS = {"tune_mm_mlp_adapter", "freeze_mm_mlp_adapter", "tune_audio_mlp_adapter", "freeze_audio_encoder",
                  "freeze_audio_encoder_adapter", "unfreeze_vision_tower", "audio_prompt_finetune",
                  "audio_state_predictor_tuning", "mm_projector_lr", "pretrain_mm_mlp_adapter",
                  "pretrain_audio_mlp_adapter", "freeze_backbone"}
OTHER_VITA = {"mm_use_im_start_end", "mm_use_im_patch_token", "mm_patch_merge_type", "image_grid_pinpoints",
              "use_s2", "s2_scales", "mm_vision_tower_lr"}
# config.json fields VITA's own code reads to build (or run) a model, upstream files under vita/model/:
# vita_arch.py (VITAMetaModel: mm_vision_tower / mm_audio_encoder present; tokenizer_model_max_length,
# tokenizer_padding_side), multimodal_encoder/builder.py (mm_vision_tower, use_s2; build_audio_encoder:
# mm_audio_encoder, freeze_audio_encoder, freeze_audio_encoder_adapter, audio_prompt_finetune,
# audio_prompt_num), multimodal_projector/builder.py (mm_projector_type, mm_hidden_size, hidden_size),
# language_model/*.py process_images (image_aspect_ratio)
VISION_READS = ("mm_vision_tower", "use_mm_proj", "mm_projector_type", "mm_hidden_size", "image_aspect_ratio")
AUDIO_READS = ("mm_audio_encoder", "freeze_audio_encoder", "freeze_audio_encoder_adapter", "audio_prompt_finetune",
               "audio_prompt_num")
UPSTREAM_READS = (*VISION_READS, *AUDIO_READS, "use_s2", "hidden_size", "tokenizer_padding_side")
HF_META = {"architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "_name_or_path",
           "use_cache", "auto_map"}


@dataclass
class Imported:
    """What a VITA folder's ``config.json`` and headers say, in vita terms."""

    family: str
    model: DictConfig
    """``cfg.model``: the ``conf/model`` entry with the folder's shapes as overrides."""
    data_overrides: dict[str, Any] = field(default_factory=dict)
    """``data.*`` values VITA recorded (``image_aspect_ratio``, ``tokenizer_model_max_length``)."""
    not_honoured: dict[str, str] = field(default_factory=dict)
    """Field -> why vita does not use it."""
    dtype: str | None = None
    """The stored ``torch_dtype``."""

    def hydra_overrides(self) -> list[str]:
        """The same model as Hydra overrides (``model=<entry>`` + ``model.*=...``), for docs and logs."""
        out = [f"model={FAMILIES[self.family].conf}"]
        m = OmegaConf.to_container(self.model, resolve=True)
        for k, v in (m.get("overrides") or {}).items():
            out.append(f"+model.overrides.{k}={json.dumps(v)}")
        for g in ("vision", "audio"):
            for k, v in (m[g].get("overrides") or {}).items():
                out.append(f"+model.{g}.overrides.{k}={json.dumps(v)}")
        out.append(f"model.tokenizer={m['tokenizer']}")
        if m["vision"]["tower"] is None:
            out.append("model.vision.tower=null")
        if m["audio"]["encoder"] is None:
            out.append("model.audio.encoder=null")
        if m["audio"].get("prompt_num"):
            out.append(f"model.audio.prompt_num={m['audio']['prompt_num']}")
        return out

    def summary(self) -> str:
        """One line: the entry, and every field vita cannot honour with its reason."""
        line = f"VITA {self.family} -> model={FAMILIES[self.family].conf} (+ the folder's shapes as overrides)"
        by_reason: dict[str, list[str]] = {}
        for k, why in sorted(self.not_honoured.items()):
            by_reason.setdefault(why, []).append(k)
        if by_reason:
            line += "; not honoured: " + "; ".join(f"{', '.join(ks)} ({why})" for why, ks in by_reason.items())
        return line


def read_config(folder: Path) -> dict:
    f = Path(folder) / "config.json"
    if not f.is_file():
        raise CheckpointError(f"{folder}: no config.json; a VITA whole-model folder has config.json, "
                              "model.safetensors.index.json and the shards")
    try:
        return json.loads(f.read_text())
    except ValueError as e:
        raise CheckpointError(f"{f}: not valid JSON ({e})") from None


def family_of(config: dict, where: Path) -> str:
    mt = config.get("model_type")
    if mt not in FAMILIES:
        raise ConfigError(f"{where}/config.json: model_type {mt!r} is not a VITA model type vita can import; known: "
                          f"{', '.join(FAMILIES)} (VITA-1.5: vita-Qwen2, its FO variant: vita-fo-Qwen2, "
                          "VITA-1.0: vita-mixtral)")
    return mt


def _count(keys, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def _tower_config(folder: Path, config: dict) -> dict:
    """The InternViT ``config.json`` at ``mm_vision_tower`` (as given, in the folder, or beside it)."""
    ref = config.get("mm_vision_tower")
    if isinstance(config.get("mm_vision_tower_config"), dict):
        found = dict(config["mm_vision_tower_config"])
    else:
        found = {}
    if not ref:
        return found
    for cand in (Path(ref), folder / ref, folder / Path(ref).name, folder.parent / Path(ref).name):
        try:
            if (cand / "config.json").is_file():
                return {**found, **json.loads((cand / "config.json").read_text())}
        except (OSError, ValueError):
            continue
    return found


def _part_present(folder: Path, config: dict, keys: dict, field: str, prefix: str, probe: str) -> bool:
    """Whether the shards hold an encoder (its ``probe`` tensor); config.json naming one the shards lack is an error."""
    if probe in keys:
        return True
    if config.get(field):
        raise CheckpointError(f"{folder}: config.json names {field}={config[field]!r} but the shards hold no "
                              f"{prefix}* tensors (expected {probe})")
    return False


def _vision(folder: Path, config: dict, wf: WeightFiles, notes: dict) -> dict | None:
    keys = wf.tensors
    patch_key = VISION + "embeddings.patch_embedding.weight"
    if not _part_present(folder, config, keys, "mm_vision_tower", VISION, patch_key):
        return None
    tower_name = str(config.get("mm_vision_tower") or "internvit").lower()
    if any(s in tower_name for s in ("sig", "eva", "clip")) and "internvit" not in tower_name:
        raise ConfigError(f"{folder}: mm_vision_tower={config['mm_vision_tower']!r}; vita imports VITA's InternViT "
                          "tower only (VITA-1.0 and 1.5 both use InternViT-300M-448px)")
    hidden, _, patch, _ = keys[patch_key].shape
    n_pos = keys[VISION + "embeddings.position_embedding"].shape[1]
    tc = _tower_config(folder, config)
    heads = tc.get("num_attention_heads")
    if heads is None:
        heads = max(1, hidden // 64)
        notes["vision heads"] = (f"no tower config.json found at mm_vision_tower; assumed {heads} heads (head dim 64, "
                                 "as InternViT-300M); set model.vision.overrides.num_attention_heads if not")
    over = dict(hidden_size=hidden, patch_size=patch, image_size=patch * math.isqrt(n_pos - 1),
                num_hidden_layers=_count(keys, re.escape(VISION) + r"encoder\.layers\.(\d+)\."),
                intermediate_size=keys[VISION + "encoder.layers.0.mlp.fc1.weight"].shape[0], num_attention_heads=heads,
                attention_bias=VISION + "encoder.layers.0.attn.qkv.bias" in keys)
    for k in ("layer_norm_eps", "drop_path_rate"):  # the tower's own config.json, as VITA builds it
        if k in tc:
            over[k] = tc[k]
    if tc.get("qk_normalization"):
        notes["qk_normalization"] = "InternViT QK-norm (the 6B tower) is not in vita's internvit entry"
    proj_type = config.get("mm_projector_type", "mlp2x_gelu")
    if not (proj_type == "linear" or re.match(r"^mlp\d+x_gelu$", proj_type)):
        raise ConfigError(f"{folder}/config.json: mm_projector_type={proj_type!r}; vita imports linear and "
                          "mlpNx_gelu projectors (VITA-1.5 uses mlp2x_gelu)")
    mm_hidden = config.get("mm_hidden_size")
    if mm_hidden is not None and mm_hidden != 4 * hidden:
        raise CheckpointError(f"{folder}/config.json: mm_hidden_size={mm_hidden}, but the tower's width {hidden} "
                              f"after the 2x2 pixel shuffle is {4 * hidden}")
    select = config.get("mm_vision_select_layer", -1)
    if config.get("mm_vision_select_feature", "patch") != "patch":
        notes["mm_vision_select_feature"] = "vita's InternViT drops CLS ('patch' only)"
    return {"tower": "internvit", "overrides": over, "select_layer": select, "projector": proj_type}


ENC = "model.audio_encoder.encoder."
ADP = "model.audio_encoder.adpter."


def _audio(folder: Path, config: dict, wf: WeightFiles, notes: dict) -> dict | None:
    keys = wf.tensors
    embed = ENC + "enc.1.embed.0.weight"
    if not _part_present(folder, config, keys, "mm_audio_encoder", ENC, embed):
        return None
    d = keys[embed].shape[0]
    blk = ENC + "enc.1.encoders.0."
    n_mels = keys[ENC + "global_cmvn.mean"].shape[0] if ENC + "global_cmvn.mean" in keys else 80
    over = dict(n_mels=n_mels, d=d, heads=keys[blk + "self_attn.pos_bias_u"].shape[0],
                ffn=keys[blk + "feed_forward.w_1.weight"].shape[0],
                layers=_count(keys, re.escape(ENC) + r"enc\.1\.encoders\.(\d+)\."))
    if ADP + "conv1d2.weight" in keys:
        projector = "subsampling"
        k = keys[ADP + "conv1d2.weight"].shape[-1]
        if k != 5:
            raise CheckpointError(f"{folder}: the audio adapter's conv has kernel {k}; vita's 'subsampling' adapter "
                                  "is VITA-1.5's kernel-5, stride-2 one")
    elif ADP + "project.weight" in keys:
        projector = "linear"
    else:
        raise CheckpointError(f"{folder}: no audio adapter tensors ({ADP}conv1d2.* or {ADP}project.*) next to the "
                              "audio encoder; VITA names its adapter 'adpter'")
    prompt_key = "model.audio_encoder.prompt_embeddings.weight"
    prompt_num = keys[prompt_key].shape[0] if prompt_key in keys else 0
    if config.get("audio_prompt_num") and prompt_num and config["audio_prompt_num"] != prompt_num:
        raise CheckpointError(f"{folder}/config.json: audio_prompt_num={config['audio_prompt_num']} but "
                              f"{prompt_key} has {prompt_num} rows")
    return {"encoder": "vita", "overrides": over, "projector": projector, "prompt_num": prompt_num}


def _llm_fields(config: dict, family: str, wf: WeightFiles, notes: dict) -> dict:
    vita_own = MM_FIELDS | TRAINING_FLAGS | OTHER_VITA | HF_META
    over = {k: v for k, v in config.items() if k not in vita_own and not k.startswith("vita_")}
    over.pop("id2label", None), over.pop("label2id", None)
    if family == "vita-fo-Qwen2":
        over["vita_state_classes"] = _state_classes(config, wf, notes)
    return over


def _state_classes(config: dict, wf: WeightFiles, notes: dict) -> int:
    """The FO user-state head's size, from ``predictor_head.weight`` in the shards (0 = none).

    Upstream's ``VITAFOQwen2ForCausalLM`` hard-codes ``predict_usr_state = 0`` whatever config.json says,
    so its folders hold no head: they import without one (a note says so), as VITA runs them."""
    head = wf.tensors.get("predictor_head.weight")
    if head is not None:
        return int(head.shape[0])
    if int(config.get("predict_usr_state") or 0) > 0:
        notes["predict_usr_state"] = ("the shards hold no predictor_head (VITA's FO class never builds one): imported "
                                      "without a user-state head; set model.state_head_classes=3 to train a fresh one")
    return 0


def model_config_from_vita(folder: str | Path, wf: WeightFiles, config: dict | None = None) -> Imported:
    """The vita model config for a VITA folder (``config.json`` + the shard headers in ``wf``).

    Raises:
        ConfigError: an unknown ``model_type``, a tower / projector vita does not have.
        CheckpointError: config.json and the weights disagree.
    """
    from vita.config import CONF_DIR, ModelConfig

    folder = Path(folder)
    config = read_config(folder) if config is None else config
    family = family_of(config, folder)
    notes: dict[str, str] = {}
    for k in sorted(TRAINING_FLAGS & set(config)):
        notes[k] = "a training flag; stage.groups decides what trains"
    for k in sorted(OTHER_VITA & set(config)):
        if config[k] not in (False, None, "flat", [], ""):
            notes[k] = "no such option in vita's InternViT path"
    if config.get("tokenizer_padding_side", "right") != "right":
        notes["tokenizer_padding_side"] = "vita pads on the right for training, on the left for batched generation"
    entry = OmegaConf.load(CONF_DIR / "model" / f"{FAMILIES[family].conf}.yaml")
    model = OmegaConf.merge(OmegaConf.structured(ModelConfig), entry)
    model.overrides = _llm_fields(config, family, wf, notes)
    import vita.model.backbones  # noqa: F401  (fills BACKBONES)
    from vita.registry import BACKBONES

    hf_cls = type(BACKBONES.build(model.backbone))
    known = set(hf_cls().to_dict()) | {"rope_theta", "rope_scaling", "vita_state_classes"}
    for k in sorted(set(model.overrides) - known):
        notes[k] = f"neither a VITA field vita knows nor a {hf_cls.__name__} field; kept on the LLM config, unused"
    if "router_aux_loss_coef" in config:
        model.router_aux_loss_coef = float(config["router_aux_loss_coef"])
    model.pretrained = None
    model.tokenizer = str(folder)
    vision = _vision(folder, config, wf, notes)
    audio = _audio(folder, config, wf, notes)
    model.vision = OmegaConf.merge(OmegaConf.structured(ModelConfig).vision, vision or {"tower": None})
    model.audio = OmegaConf.merge(OmegaConf.structured(ModelConfig).audio, audio or {"encoder": None})
    if family == "vita-fo-Qwen2":
        model.state_head_classes = model.overrides["vita_state_classes"]
    data: dict[str, Any] = {}
    if "image_aspect_ratio" in config:
        ratio = config["image_aspect_ratio"]
        if ratio in ("square", "pad"):
            data["image_aspect_ratio"] = ratio
        else:
            notes["image_aspect_ratio"] = f"{ratio!r}: vita has square (tile the raw image) and pad"
    if config.get("tokenizer_model_max_length"):
        data["max_length"] = int(config["tokenizer_model_max_length"])
    return Imported(family, model, data, notes, config.get("torch_dtype") or config.get("dtype"))


def family_for_backbone(backbone: str, state_classes: int = 0) -> str:
    if backbone in BACKBONE_FAMILY:
        return BACKBONE_FAMILY[backbone]
    for prefix, fam in (("qwen2", "vita-Qwen2"), ("mixtral", "vita-mixtral"), ("mistral", "vita-Mistral")):
        if prefix in backbone:
            return "vita-fo-Qwen2" if fam == "vita-Qwen2" and state_classes else fam
    raise ConfigError(f"model.backbone={backbone}: VITA has no model type for it (VITA ships Qwen2, Mixtral and "
                      "Mistral backbones)")


def vita_config_from_model(llm_config: dict, model_cfg: dict, dims: dict, template: dict | None = None,
                           dtype: str | None = None, data: dict | None = None) -> dict:
    """VITA's ``config.json`` for a vita model.

    Args:
        llm_config: the LLM's HF config as a dict (``final/config.json``).
        model_cfg: ``cfg.model`` as a dict (tower, projector, encoder names, prompt count).
        dims: measured shapes: ``vision_hidden`` (tower width), ``vision_heads``, ``state_classes``.
        template: the source VITA ``config.json`` (a run that started from VITA), whose other fields
            (encoder paths, training flags) are kept.
        dtype: the stored tensor dtype (``bfloat16`` ...).
        data: the run's prompt settings (``max_length`` -> ``tokenizer_model_max_length``).

    Every field of :data:`UPSTREAM_READS` that applies is written.
    """
    state = int(dims.get("state_classes") or 0)
    family = family_for_backbone(model_cfg["backbone"], state)
    out = dict(template or {})
    llm = {k: v for k, v in llm_config.items() if k not in HF_META and not k.startswith("vita_")}
    out.update(llm)
    rope = llm_config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        out["rope_theta"] = rope["rope_theta"]  # transformers 4 (VITA's pin) reads this name
    if dtype:
        out["torch_dtype"] = dtype
    out["model_type"] = family
    out["architectures"] = [FAMILIES[family].architecture]
    if family == "vita-fo-Qwen2":
        if state > 0:
            out["predict_usr_state"] = state - 1
        else:
            out.setdefault("predict_usr_state", 0)
    vision, audio = model_cfg.get("vision") or {}, model_cfg.get("audio") or {}
    if vision.get("tower"):
        if "internvit" not in vision["tower"]:
            raise ConfigError(f"model.vision.tower={vision['tower']}: VITA's layout holds an InternViT tower only")
        out.setdefault("mm_vision_tower", "InternViT-300M-448px")
        out["mm_hidden_size"] = 4 * dims["vision_hidden"]
        out["mm_projector_type"] = vision.get("projector", "mlp2x_gelu")
        out["mm_vision_select_layer"] = vision.get("select_layer") if vision.get("select_layer") is not None else -1
        out["mm_vision_select_feature"] = "patch"
        out.setdefault("image_aspect_ratio", "square")
        out["use_mm_proj"] = True
        out["mm_vision_tower_config"] = {**dims.get("vision_config", {}), "num_attention_heads": dims["vision_heads"]}
    else:
        for k in ("mm_vision_tower", "mm_hidden_size", "mm_projector_type", "mm_vision_tower_config"):
            out.pop(k, None)
    if audio.get("encoder"):
        if audio["encoder"] not in ("vita", "tiny-vita"):
            raise ConfigError(f"model.audio.encoder={audio['encoder']}: VITA's layout holds its own audio encoder only")
        out.setdefault("mm_audio_encoder", "audio-encoder")
        out.setdefault("freeze_audio_encoder", True)
        out.setdefault("freeze_audio_encoder_adapter", True)
        n = int(audio.get("prompt_num") or 0)
        out["audio_prompt_finetune"] = n > 0  # upstream builds prompt_embeddings only when set (whale/init_model.py)
        out["audio_prompt_num"] = n if n else out.get("audio_prompt_num")
        out.setdefault("audio_state_predictor_tuning", False)
    else:
        for k in ("mm_audio_encoder", "audio_prompt_finetune", "audio_prompt_num"):
            out.pop(k, None)
    out.setdefault("use_s2", False)  # build_vision_tower reads it
    out.setdefault("tokenizer_padding_side", "right")
    if (data or {}).get("max_length"):
        out.setdefault("tokenizer_model_max_length", int(data["max_length"]))
    missing = [k for k in UPSTREAM_READS if k not in out and (k not in VISION_READS or vision.get("tower"))
               and (k not in AUDIO_READS or audio.get("encoder"))]
    if missing:
        raise RuntimeError(f"VITA config.json for {family} lacks fields VITA reads to build the model: {missing}")
    return out
