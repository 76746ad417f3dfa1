"""Checks a typed schema cannot express (choices, registry keys, batch arithmetic), run on a composed
config before anything is built; re-exported by :mod:`vita.config`."""

from __future__ import annotations

import difflib
import os

from omegaconf import DictConfig, OmegaConf

from vita.errors import ConfigError

ENUMS = {
    "engine.zero_stage": (0, 1, 2, 3),
    "engine.precision": ("fp32", "bf16", "fp16"),
    "engine.optimizer_impl": ("auto", "torch", "fused"),
    "engine.fused_loss": ("auto", "chunked", "liger", "off"),
    "optim.scheduler": ("cosine", "linear", "constant"),
    "train.resume": ("auto", "never"),
    "train.nan_policy": ("stop", "skip"),
    "data.on_bad_sample": ("fail", "skip"),
    "data.overlong": ("truncate", "skip", "fail"),
    "model.quantization": (None, "4bit", "8bit"),
    "stage.export": ("full", "trainable"),
    "stage.task": ("train", "codec"),
    "data.image_aspect_ratio": ("square", "pad"),
}
GROUP_MODES = ("full", "frozen", "lora")
LOGGERS = ("console", "jsonl", "wandb", "tensorboard")


def suggest_key(cfg: DictConfig, key: str) -> str:
    """A one-line message for an unknown dotted key, with the valid keys of its parent node."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if not isinstance(node, DictConfig):
        return f"unknown config key '{key}'"
    valid = sorted(str(k) for k in node.keys())
    close = difflib.get_close_matches(leaf, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(f'{parent}.{c}' if parent else c) for c in close)}?" if close else ""
    where = f"'{parent}'" if parent else "the top level"
    return f"unknown config key '{key}'.{hint} Valid keys under {where}: {', '.join(valid)}"


def validate(cfg: DictConfig) -> None:
    """Checks a schema cannot express: choices, registry keys, batch arithmetic. Builds nothing."""
    from vita.registry import AUDIO_ENCODERS, BACKBONES, DATASETS, TEMPLATES, VISION_TOWERS, load_builtins

    load_builtins()
    for key, allowed in ENUMS.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"config key '{key}' is {value!r}; valid options: {', '.join(map(str, allowed))}")
    for name, group in cfg.stage.groups.items():
        if group.mode not in GROUP_MODES:
            raise ConfigError(
                f"config key 'stage.groups.{name}.mode' is {group.mode!r}; valid options: {', '.join(GROUP_MODES)}"
            )
    if cfg.model.quantization and cfg.stage.groups.llm.mode == "full":
        raise ConfigError(
            f"model.quantization={cfg.model.quantization} cannot train the LLM fully: set stage.groups.llm.mode "
            "to lora (QLoRA) or frozen")
    for lg in cfg.logging.loggers:
        if lg not in LOGGERS:
            raise ConfigError(f"config key 'logging.loggers' has {lg!r}; valid options: {', '.join(LOGGERS)}")
    BACKBONES.get(cfg.model.backbone)
    if cfg.model.vision.tower is not None:
        VISION_TOWERS.get(cfg.model.vision.tower)
        _projector_key(cfg.model.vision.projector, "model.vision.projector")
    if cfg.model.audio.encoder is not None:
        AUDIO_ENCODERS.get(cfg.model.audio.encoder)
        _projector_key(cfg.model.audio.projector, "model.audio.projector")
    if cfg.model.speech.codec is not None:
        from vita.registry import SPEECH_CODECS

        SPEECH_CODECS.get(cfg.model.speech.codec)
    TEMPLATES.get(cfg.data.template)
    from vita.data.samplers import sampler_options

    sampler_options(cfg.data)  # an unknown data.sampler_options key: named now, not ignored
    DATASETS.get(cfg.data.format)
    for key in ("engine.micro_batch_size", "engine.grad_accum", "data.max_length", "train.log_every"):
        if OmegaConf.select(cfg, key) < 1:
            raise ConfigError(f"config key '{key}' must be >= 1, got {OmegaConf.select(cfg, key)}")
    if cfg.data.sampler == "token_budget" and cfg.data.token_budget < 1:
        raise ConfigError("data.sampler=token_budget needs data.token_budget >= 1 (tokens per micro-batch)")
    if cfg.data.packing and cfg.data.sampler == "token_budget" and cfg.data.token_budget < cfg.data.max_length:
        raise ConfigError(f"data.packing with sampler=token_budget fills token_budget // max_length rows per "
                          f"micro-batch: data.token_budget={cfg.data.token_budget} < data.max_length="
                          f"{cfg.data.max_length}; set data.token_budget to a multiple of data.max_length")
    if cfg.data.packing and cfg.data.sampler != "token_budget":
        log_hint = "packing fills rows of data.max_length from each micro-batch; pair it with sampler=token_budget"
        if cfg.engine.micro_batch_size < 2:
            raise ConfigError(f"data.packing=true with engine.micro_batch_size=1 packs nothing; {log_hint}")
    from vita.model.attention import require_flash_attn

    require_flash_attn(cfg.model.attn_implementation)
    _validate_sequence_parallel(cfg)
    _validate_eval(cfg)
    if cfg.train.resume_from is not None and not os.path.isdir(cfg.train.resume_from):
        raise ConfigError(f"train.resume_from={cfg.train.resume_from}: no such checkpoint folder")


def _validate_sequence_parallel(cfg: DictConfig) -> None:
    """``engine.sequence_parallel``: divides the LLM's heads (and the world size, when the launcher has set it)."""
    from vita.model.sequence_parallel import check_sp_size
    from vita.registry import BACKBONES

    sp = cfg.engine.sequence_parallel
    for key in ("engine.max_tokens_per_rank", "engine.tiled_mlp"):
        if OmegaConf.select(cfg, key) < 0:
            raise ConfigError(f"config key '{key}' must be >= 0, got {OmegaConf.select(cfg, key)}")
    if sp == 1:
        check_sp_size(sp, 1, None, None)
        return
    llm = BACKBONES.build(cfg.model.backbone)
    world = os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS")
    check_sp_size(sp, int(world) if world else sp, llm.num_attention_heads,
                  getattr(llm, "num_key_value_heads", None), f"model.backbone={cfg.model.backbone}")
    if cfg.model.attn_implementation != "sdpa":
        raise ConfigError(f"engine.sequence_parallel={sp} runs Ulysses around sdpa attention: set "
                          f"model.attn_implementation=sdpa (got {cfg.model.attn_implementation})")
    if hasattr(llm, "num_local_experts") or getattr(llm, "vita_state_classes", 0):
        raise ConfigError(f"engine.sequence_parallel={sp} supports dense LLMs without the user-state head; "
                          f"model.backbone={cfg.model.backbone} is MoE or has the head: set engine.sequence_parallel=1")


def _validate_eval(cfg: DictConfig) -> None:
    from vita.eval.metrics import parse_metrics

    sets = OmegaConf.select(cfg, "data.eval") or {}
    for name, es in sets.items():
        try:
            parse_metrics(es.metric)
        except ConfigError as e:
            raise ConfigError(f"config key 'data.eval.{name}.metric': {e}") from None
        if not es.annotations:
            raise ConfigError(f"eval set 'data.eval.{name}' has no annotations; set data.eval.{name}.annotations")
        for key in ("max_new_tokens", "batch_size"):
            if es[key] < 1:
                raise ConfigError(f"config key 'data.eval.{name}.{key}' must be >= 1, got {es[key]}")
    best = cfg.train.keep_best
    if best:
        set_name, _, met = str(best).partition("/")
        if set_name not in sets or not met:
            raise ConfigError(f"train.keep_best={best!r} must be <set>/<metric> of a data.eval set "
                              f"(sets: {', '.join(sets) or 'none'})")
        if met not in ("loss", "ppl") and met not in parse_metrics(sets[set_name].metric):
            raise ConfigError(f"train.keep_best={best!r}: set '{set_name}' computes "
                              f"{', '.join(['loss', 'ppl', *parse_metrics(sets[set_name].metric)])}, not {met}")
    if cfg.train.eval_every < 0:
        raise ConfigError(f"train.eval_every must be >= 0, got {cfg.train.eval_every}")
    # train.eval_every / eval_at_start without data.eval sets evaluate nothing: the embedded default sets them
    # for its demo_cards sets, and a run on other data (data=..., experiment=...) must not fail for that.


def _projector_key(name: str, key: str) -> None:
    import re

    from vita.registry import PROJECTORS

    if not re.match(r"^mlp\d+x_gelu$", name) and name not in PROJECTORS:
        try:
            PROJECTORS.get(name)
        except ConfigError as e:
            raise ConfigError(f"config key '{key}': {e}") from None
