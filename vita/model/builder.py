"""``build_model(cfg.model)``: registries -> :class:`~vita.model.omni.OmniModel`; :func:`build_for`: the one
way every command (training, inference, evaluation, import, data check) gets a model, its tokenizer and its
data spec."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import vita.model.audio  # noqa: F401,E402  (fills AUDIO_ENCODERS)
import vita.model.vision  # noqa: F401,E402  (fills VISION_TOWERS)
from vita.errors import ConfigError
from vita.model.backbones import build_backbone
from vita.model.omni import OmniModel
from vita.model.projectors import build_projector
from vita.model.tokens import ensure_media_tokens, load_tokenizer
from vita.model.weights import internvit_from_opengvlab, load_into, load_strict, read_state_dict, strip_prefix
from vita.registry import AUDIO_ENCODERS, VISION_TOWERS
from vita.spec import DataSpec

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""vita's dtype names (``engine.precision``, ``--dtype``) -> torch dtypes: the one map."""


def torch_dtype(name: str | torch.dtype | None, default: torch.dtype | None = None) -> torch.dtype | None:
    """``fp32``/``bf16``/``fp16`` (or a torch name such as ``bfloat16``, or a dtype) -> the torch dtype;
    None or ``auto`` -> ``default``; anything else is a :class:`ConfigError` listing the names."""
    if name in (None, "auto"):
        return default
    if isinstance(name, torch.dtype):
        return name
    found = DTYPES.get(name) or getattr(torch, str(name), None)
    if not isinstance(found, torch.dtype):
        raise ConfigError(f"dtype {name!r}: use one of {', '.join(DTYPES)} (or auto, float32, bfloat16, float16)")
    return found


def build_vision(vcfg, llm_hidden: int) -> tuple[nn.Module | None, nn.Module | None]:
    """The vision tower and its projector described by ``cfg.model.vision`` (both None without a tower)."""
    if vcfg.tower is None:
        return None, None
    kw: dict[str, Any] = dict(vcfg.overrides or {})
    if vcfg.select_layer is not None:
        kw["select_layer"] = vcfg.select_layer
    if vcfg.use_s2:
        kw["use_s2"] = True
        if vcfg.s2_scales:
            kw["s2_scales"] = list(vcfg.s2_scales)
    tower = VISION_TOWERS.build(vcfg.tower, **kw)
    if vcfg.pretrained:
        target = tower.tower.model if hasattr(tower, "tower") else tower.model
        load_into(target, vcfg.pretrained, "vision tower", prefixes=("model.vision_tower.", "vision_tower.",
                  "vision_model."), adapt=internvit_from_opengvlab if "internvit" in vcfg.tower else None)
    proj = build_projector(vcfg.projector, tower.hidden_size, llm_hidden)
    if vcfg.projector_pretrained:
        sd = read_state_dict(vcfg.projector_pretrained)
        sd = {k.split("mm_projector.", 1)[1] if "mm_projector." in k else k: v for k, v in sd.items()}
        sd = {k if k.startswith("layers.") else f"layers.{k}": v for k, v in sd.items()} if hasattr(proj, "layers") else sd
        load_strict(proj, sd, f"vision projector ({vcfg.projector_pretrained})")
    return tower, proj


_ADAPTER_NAMES = {"conv1d2": "conv1d", "bn2": "norm", "project": "linear"}


def build_audio(acfg, llm_hidden: int) -> tuple[nn.Module | None, nn.Module | None]:
    """The audio encoder and its projector described by ``cfg.model.audio``."""
    if acfg.encoder is None:
        return None, None
    enc = AUDIO_ENCODERS.build(acfg.encoder, pretrained=acfg.pretrained, **dict(acfg.overrides or {}))
    proj = build_projector(acfg.projector, enc.hidden_size, llm_hidden)
    if acfg.projector_pretrained:
        sd = strip_prefix(read_state_dict(acfg.projector_pretrained), ("model.audio_encoder.", "audio_encoder."))
        if any(k.startswith("adpter.") for k in sd):  # VITA's final.pt: adpter.{conv1d2,bn2,project}
            sd = {".".join([_ADAPTER_NAMES.get(k.split(".")[1], k.split(".")[1]), *k.split(".")[2:]]): v
                  for k, v in sd.items() if k.startswith("adpter.")}
        load_strict(proj, sd, f"audio projector ({acfg.projector_pretrained})")
    return enc, proj


def build_speech(scfg, llm_hidden: int) -> tuple[nn.Module | None, Any]:
    """The speech decoder and its codec described by ``cfg.model.speech`` (both None when neither is set).

    The decoder's ``codebooks`` / ``codebook_size`` come from the codec; ``decoder_pretrained`` (a safetensors
    file, or an export folder holding ``speech_decoder.safetensors``) loads its weights."""
    if scfg is None or (scfg.decoder is None and scfg.codec is None):
        return None, None
    if scfg.decoder is None or scfg.codec is None:
        have, lack = ("decoder", "codec") if scfg.codec is None else ("codec", "decoder")
        raise ConfigError(f"model.speech.{have}={scfg[have]!r} needs model.speech.{lack} too: a speech decoder "
                          "predicts a codec's codes (set both, e.g. model.speech.codec=mel_rvq "
                          "model.speech.decoder=nar_ar, or neither)")
    import vita.model.speech.codecs  # noqa: F401  (fills SPEECH_CODECS)
    import vita.model.speech.decoders  # noqa: F401  (fills SPEECH_DECODERS)
    from vita.artefacts import speech_decoder_weights
    from vita.registry import SPEECH_CODECS, SPEECH_DECODERS

    kw = dict(scfg.codec_options or {})
    if scfg.codec_path:
        kw["path"] = str(scfg.codec_path)
    codec = SPEECH_CODECS.build(scfg.codec, **kw)
    decoder = SPEECH_DECODERS.build(scfg.decoder, llm_hidden=llm_hidden, codebooks=codec.codebooks,
                                    codebook_size=codec.codebook_size, **dict(scfg.decoder_overrides or {}))
    if scfg.decoder_pretrained:
        load_strict(decoder, read_state_dict(speech_decoder_weights(scfg.decoder_pretrained)),
                    f"speech decoder ({scfg.decoder_pretrained})")
    return decoder, codec


def _speech_spec(scfg, codec, decoder) -> dict:
    """The data spec's speech fields (:func:`vita.data.speech.speech_spec`, the one spelling) as OmniModel arguments."""
    from vita.data.speech import speech_spec

    spec = speech_spec(scfg, codec)
    most = getattr(decoder, "max_frames", 0)
    if most and spec["speech_max_frames"] > most:
        raise ConfigError(f"model.speech.max_seconds={scfg.max_seconds} is {spec['speech_max_frames']} code frames at the "
                          f"codec's {codec.frame_rate:g} Hz, more than the speech decoder '{scfg.decoder}' takes "
                          f"({most}); lower model.speech.max_seconds to {most / codec.frame_rate:.1f} or raise "
                          "model.speech.decoder_overrides.max_frames")
    return {"speech_codec_spec": spec["speech_codec"], "speech_max_frames": spec["speech_max_frames"]}


def build_model(model_cfg, vocab_size: int | None = None, work_dir: Path | None = None,
                compute_dtype: torch.dtype = torch.float32, gradient_checkpointing: bool = False) -> OmniModel:
    """Build the OmniModel described by ``cfg.model`` (an OmegaConf node or a ModelConfig).

    Args:
        model_cfg: ``cfg.model``.
        vocab_size: the tokenizer's size.
        work_dir: where a quantised random-init base is saved (``model.quantization`` only).
        compute_dtype: compute dtype of k-bit layers.
        gradient_checkpointing: prepared together with k-bit training.
    """
    if model_cfg.quantization:
        from vita.model.quant import load_quantized_llm

        if work_dir is None:
            raise ValueError("build_model needs work_dir when model.quantization is set")
        llm = load_quantized_llm(model_cfg, vocab_size, work_dir, compute_dtype, gradient_checkpointing)
    else:
        llm = build_backbone(model_cfg, vocab_size=vocab_size)
    hidden = llm.config.get_text_config().hidden_size
    tower, vproj = build_vision(model_cfg.vision, hidden)
    enc, aproj = build_audio(model_cfg.audio, hidden)
    speech = getattr(model_cfg, "speech", None)
    decoder, codec = build_speech(speech, hidden)
    state = model_cfg.state_head_classes
    if state is None:
        state = int(getattr(llm.config, "vita_state_classes", 0) or 0)
    model = OmniModel(llm, tower, vproj, enc, aproj, audio_prompt_num=model_cfg.audio.prompt_num,
                      state_head_classes=state, state_loss_weight=model_cfg.state_loss_weight,
                      state_class_weights=list(model_cfg.state_class_weights),
                      router_aux_loss_coef=model_cfg.router_aux_loss_coef, speech_decoder=decoder, speech_codec=codec,
                      speech_codebook_weights=list(speech.codebook_weights) if decoder is not None else None,
                      **(_speech_spec(speech, codec, decoder) if decoder is not None else {}))
    if model.is_moe:
        mark_moe_leaves(model)
    return model


@dataclass
class Built:
    """What :func:`build_for` returns."""

    model: OmniModel
    tokenizer: Any
    """With vita's media placeholder tokens when the model has encoders."""
    spec: DataSpec | None
    """The encoders' :class:`DataSpec` (token counts, tile size, placeholder ids, speech codec); None for a text-only
    model without a speech decoder."""


def build_for(model_cfg, tokenizer=None, *, tokenizer_dir: str | Path | None = None,
              build: Callable[..., OmniModel] | None = None, **build_kw: Any) -> Built:
    """The model of ``cfg.model`` with its tokenizer and data spec: tokenizer -> build -> media tokens -> spec.

    Args:
        model_cfg: ``cfg.model``.
        tokenizer: a ready tokenizer (e.g. a VITA folder's); else :func:`~vita.model.tokens.load_tokenizer`
            of ``model_cfg`` (or of ``tokenizer_dir``, an export's).
        build: ``build(model_cfg, vocab_size=..., **build_kw)`` -> OmniModel; default :func:`build_model`
            (``vita.interop`` passes its streaming build of a VITA folder).
        build_kw: more arguments of ``build`` (``work_dir``, ``compute_dtype`` ...).
    """
    if tokenizer is None:
        tokenizer = load_tokenizer(model_cfg, str(tokenizer_dir) if tokenizer_dir else None)
    model = (build or build_model)(model_cfg, vocab_size=len(tokenizer), **build_kw)
    spec = None
    if model.has_media:
        ensure_media_tokens(tokenizer, model)  # placeholder ids; adds and resizes if the tokenizer lacks them
    if model.has_data_spec:
        spec = model.data_spec()
    return Built(model, tokenizer, spec)


def mark_moe_leaves(model: nn.Module) -> list[type]:
    """Register MoE expert blocks as ZeRO-3 leaf modules (their experts are gathered as one unit)."""
    classes = sorted({type(m) for m in model.modules() if type(m).__name__.endswith("SparseMoeBlock")}, key=str)
    if classes:
        from deepspeed.utils import set_z3_leaf_modules

        set_z3_leaf_modules(model, classes)
    return classes


def count_params(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


__all__ = ["Built", "DTYPES", "build_for", "torch_dtype", "build_model", "build_vision", "build_audio", "build_speech",
           "mark_moe_leaves", "count_params"]
