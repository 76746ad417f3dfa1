"""Load a model to run: ``load_target(target, overrides)`` -> :class:`Loaded`.

A target is one of these kinds, tried in order (:data:`TARGET_KINDS`; add one with
:func:`register_target`, e.g. a VITA-1.5 checkpoint folder importer):

* ``run``: a run dir (holds its saved config, :mod:`vita.artefacts`): its newest complete checkpoint
  (``checkpoints/step_*``, any ZeRO stage, LoRA merged with the run's scale), else its ``final/``
  export; the config is the run's own, with ``overrides`` applied on top;
* ``export``: an export folder (holds the export meta file: ``<run>/final`` or the output of
  ``python -m vita.export``): the HF LLM, each ``<group>.safetensors``, PEFT adapters merged;
* ``hf``: a plain Hugging Face causal-LM folder (``config.json``), text only;
* ``config``: no path, only Hydra overrides (``model=smol_lm data=demo``): the model exactly as
  training builds it (pretrained weights, ``stage.init_from``).

Overrides are Hydra-style: ``data=demo`` swaps a config group, ``data.max_tiles=4`` sets a key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from vita import artefacts
from vita.cli import override_key
from vita.errors import CheckpointError, ConfigError
from vita.model.builder import DTYPES

log = logging.getLogger("vita")


@dataclass
class Loaded:
    """A model ready for inference and everything needed to prompt it the way it was trained."""

    model: torch.nn.Module
    """The :class:`~vita.model.omni.OmniModel`, in eval mode."""
    tokenizer: object
    processor: object
    """The training :class:`~vita.data.dataset.Processor` (template, media options, ``data.max_length``)."""
    cfg: DictConfig
    """The full config (``cfg.model``, ``cfg.data`` ...) it was built from."""
    kind: str
    source: str
    """What was loaded (the checkpoint or folder), for messages."""
    stop: list[list[int]]
    """Token sequences that end an answer (template end-of-turn, EOS)."""

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id or 0)

    def supports(self, modality: str) -> bool:
        """Whether the model has an encoder for ``image``, ``video`` or ``audio``."""
        return self.processor.supports(modality)


LoadFn = Callable[[Path | None, list[str], str], Loaded]
TARGET_KINDS: dict[str, tuple[Callable[[Path | None], bool], LoadFn]] = {}
"""kind -> (detect(path) -> bool, load(path, overrides, dtype) -> Loaded), tried in insertion order."""


def register_target(kind: str, detect: Callable[[Path | None], bool], load: LoadFn, first: bool = False) -> None:
    """Add a target kind (``first``: try it before the built-in ones)."""
    if kind in TARGET_KINDS:
        raise ConfigError(f"target kind '{kind}' is already registered")
    items = list(TARGET_KINDS.items())
    TARGET_KINDS.clear()
    if first:
        TARGET_KINDS[kind] = (detect, load)
    TARGET_KINDS.update(items)
    TARGET_KINDS.setdefault(kind, (detect, load))


def split_target(args: list[str]) -> tuple[str | None, list[str]]:
    """``[TARGET] [overrides]`` -> (target or None, overrides): the target is the one argument without ``=``."""
    paths = [a for a in args if "=" not in a]
    if len(paths) > 1:
        raise ConfigError(f"more than one target given ({', '.join(paths)}); pass one run dir, export or "
                          "model folder, then key=value overrides")
    return (paths[0] if paths else None), [a for a in args if "=" in a]


def load_target(target: str | Path | None, overrides: list[str] | None = None, dtype: str = "fp32",
                kind: str | None = None) -> Loaded:
    """Load ``target`` (a run dir, an export, a HF folder, or None = the config of ``overrides``).

    Args:
        target: path or None.
        overrides: Hydra-style overrides (``data=demo``, ``data.max_tiles=4``, ``model=smol_lm``).
        dtype: ``fp32``, ``bf16`` or ``fp16`` for the weights.
        kind: force a target kind (a key of :data:`TARGET_KINDS`) instead of detecting it.

    Raises:
        ConfigError / CheckpointError: with the path and what to pass instead.
    """
    overrides = list(overrides or [])
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    path = Path(target).expanduser() if target not in (None, "") else None
    if path is not None and not path.exists():
        raise ConfigError(f"target {path} does not exist; pass a run dir, an export folder (<run>/final), a HF "
                          "model folder, or only config overrides (model=smol_lm)")
    if kind is not None:
        if kind not in TARGET_KINDS:
            raise ConfigError(f"unknown target kind '{kind}'; known: {', '.join(TARGET_KINDS)}")
        return TARGET_KINDS[kind][1](path, overrides, dtype)
    for _name, (detect, load) in TARGET_KINDS.items():
        if detect(path):
            return load(path, overrides, dtype)
    raise ConfigError(f"{path}: not a run dir ({artefacts.CONFIG_FILE}), an export ({artefacts.EXPORT_META}), a VITA "
                      f"folder or a HF model folder ({artefacts.HF_CONFIG}); known kinds: {', '.join(TARGET_KINDS)}")


# -- configs ---------------------------------------------------------------------------------------
def compose(overrides: list[str]) -> DictConfig:
    """``conf/config.yaml`` composed with ``overrides`` as ``python -m vita.run`` would: through
    :func:`vita.cli.compose_cli`, so ``--config-dir DIR`` and ``hydra.searchpath=[...]`` work here too."""
    from vita.cli import compose_cli

    return compose_cli(list(overrides), resolve=False)


def apply_overrides(base: dict, overrides: list[str]) -> DictConfig:
    """A saved (resolved) config with Hydra-style overrides: ``group=option`` replaces that node by the
    composed one, ``a.b=value`` sets a key; the result is typed by the schema again."""
    from vita.cli import is_addition, parse_overrides, split_config_dirs
    from vita.config import Config, register_configs

    register_configs()
    cfg = OmegaConf.merge(OmegaConf.structured(Config), base)
    dirs, overrides = split_config_dirs(list(overrides))
    where = [a for d in dirs for a in ("--config-dir", d)]
    where += [o for o in overrides if o.startswith("hydra.searchpath=")]
    parsed = parse_overrides([o for o in overrides if not o.startswith("hydra.searchpath=")], strict=True)
    groups = {o.key_or_group for o in parsed if "." not in o.key_or_group}
    if groups:  # those nodes composed afresh, with the keys set under them
        fresh = compose(where + [o.input_line for o in parsed if o.key_or_group.split(".")[0] in groups])
        for g in groups:
            cfg[g] = fresh[g]
    for o in parsed:
        if o.key_or_group.split(".")[0] not in groups:
            OmegaConf.update(cfg, o.key_or_group, o.value(), force_add=is_addition(o))
    return cfg


# -- building ----------------------------------------------------------------------------------------
def assemble(cfg: DictConfig, kind: str, source: str, dtype: str, tokenizer_dir: Path | None = None,
             weights: Callable[[torch.nn.Module], None] | None = None) -> Loaded:
    """Tokenizer + model exactly as ``vita.run`` builds them, then ``weights(model)``, then eval mode."""
    from vita.config import validate
    from vita.data import make_processor
    from vita.data.templates import ChatFormat
    from vita.infer.generate import stop_sequences
    from vita.model.builder import build_for

    OmegaConf.resolve(cfg)
    if not cfg.data.get("eval"):  # another data= than the run's: its in-loop eval settings do not apply here
        cfg.train.keep_best, cfg.train.eval_every, cfg.train.eval_at_start = None, 0, False
    validate(cfg)
    if cfg.model.quantization:
        raise ConfigError("inference loads the LLM unquantised; drop model.quantization (a QLoRA export is "
                          "loaded on its recorded base)")
    torch.manual_seed(cfg.train.seed)  # randomly initialised parts start as the run's did
    built = build_for(cfg.model, tokenizer_dir=tokenizer_dir)
    model, tokenizer = built.model, built.tokenizer
    if weights is not None:
        weights(model)
    model.eval().to(DTYPES[dtype])
    proc = make_processor(cfg.data, tokenizer, built.spec)
    proc.prompt_max_length = int(getattr(model.llm.config.get_text_config(), "max_position_embeddings", 0) or 0)
    template: ChatFormat = proc.template
    return Loaded(model, tokenizer, proc, cfg, kind, source, stop_sequences(tokenizer, template.end))


def adopt_speech(cfg: DictConfig, folder: Path, overrides: list[str] = ()) -> None:
    """Point ``cfg.model.speech`` at the decoder config and codec a run dir / export carries
    (:func:`vita.artefacts.write_speech`), so ``vita.chat`` speaks with them wherever the original codec was;
    ``model.speech...`` given in ``overrides`` wins."""
    if any(override_key(o).lstrip("+~").startswith("model.speech") for o in overrides):
        return
    decoder, codec = artefacts.read_speech(folder)
    if codec is not None:
        for key in ("codec", "codec_path", "codec_options"):
            OmegaConf.update(cfg, f"model.speech.{key}", codec.get(key), merge=False)
    if decoder is not None:
        OmegaConf.update(cfg, "model.speech.decoder", decoder["decoder"])
        OmegaConf.update(cfg, "model.speech.decoder_overrides", decoder.get("decoder_overrides") or {}, merge=False)
        if (Path(folder) / artefacts.SPEECH_DECODER_WEIGHTS).is_file():  # the export's own weights (load_init)
            OmegaConf.update(cfg, "model.speech.decoder_pretrained", None)


def _is_config(p: Path | None) -> bool:
    return p is None


def _lora_scales(cfg: DictConfig) -> dict[str, float]:
    return {name: g.lora.alpha / g.lora.r for name, g in cfg.stage.groups.items() if g.mode == "lora"}


def load_checkpoint_weights(model: torch.nn.Module, ckpt: Path, cfg: DictConfig) -> None:
    """A DeepSpeed checkpoint folder's weights (consolidated, LoRA merged with the run's scales) into ``model``."""
    from vita.model.init_from import load_init

    load_init(model, ckpt, lora_scale=_lora_scales(cfg))


def load_run(path: Path, overrides: list[str], dtype: str) -> Loaded:
    """A run dir: newest complete checkpoint, else its ``final/`` export."""
    from vita.engine.checkpoint import find_resumable

    cfg = apply_overrides(artefacts.read_run_config(path), overrides)
    adopt_speech(cfg, path, overrides)
    ckpt = find_resumable(artefacts.checkpoints_of(path))
    final = artefacts.final_of(path)
    if ckpt is not None:
        tok_dir = final if (final / artefacts.TOKENIZER_CONFIG).is_file() else None
        return assemble(cfg, "run", str(ckpt), dtype, tok_dir, lambda m: load_checkpoint_weights(m, ckpt, cfg))
    if artefacts.is_export(final):
        return load_export(final, overrides, dtype, base=cfg)
    raise CheckpointError(f"run dir {path} has no complete checkpoint and no final/ export yet; wait for its first "
                          "checkpoint (train.ckpt_every) or pass another run")


def load_export(path: Path, overrides: list[str], dtype: str, base: DictConfig | None = None) -> Loaded:
    """An export folder: LLM (HF) + group safetensors + adapters, as the run's final model."""
    from vita.model.init_from import load_init

    meta = artefacts.read_export_meta(path)
    if base is None:
        base_cfg = compose([o for o in overrides if "." not in override_key(o)])
        saved = OmegaConf.to_container(base_cfg, resolve=False)
        if "data" in meta:  # prompt settings of the run that wrote it (template, tiles, state tokens ...)
            saved["data"] = {**saved["data"], **meta["data"]}
        elif meta.get("template") and not any(override_key(o).startswith("data") for o in overrides):
            saved["data"]["template"] = meta["template"]
        if "model" in meta:
            saved["model"] = meta["model"]
        cfg = apply_overrides(saved, [o for o in overrides if "." in override_key(o)])
    else:
        cfg = base
    adopt_speech(cfg, path, overrides)
    llm_files = artefacts.llm_weight_files(path)
    qlora_base = meta.get("base_model")
    OmegaConf.update(cfg, "model.pretrained", str(path) if llm_files or not qlora_base else qlora_base)
    OmegaConf.update(cfg, "model.gguf_file", None)
    OmegaConf.update(cfg, "model.tokenizer", str(path))
    OmegaConf.update(cfg, "model.quantization", None)
    OmegaConf.update(cfg, "stage.init_from", None)
    missing = [g for g in meta.get("groups", []) if g != "llm" and not (path / f"{g}.safetensors").is_file()]
    if missing:
        log.warning("%s lacks %s (python -m vita.export writes only the LLM): those groups keep the weights "
                    "their config gives; copy the .safetensors files from the source export to use the trained ones",
                    path, ", ".join(f"{g}.safetensors" for g in missing))

    def weights(model) -> None:
        if llm_files or any((path / f"{g}.safetensors").is_file() for g in model.module_groups() if g != "llm"):
            load_init(model, path)
        if qlora_base and not llm_files and (path / "adapters" / "llm" / "adapter_config.json").is_file():
            from peft import PeftModel

            model.llm = PeftModel.from_pretrained(model.llm, str(path / "adapters" / "llm")).merge_and_unload()

    return assemble(cfg, "export", str(path), dtype, path, weights)


def load_hf(path: Path, overrides: list[str], dtype: str) -> Loaded:
    """A plain HF causal-LM folder, text only (template: ``data.template``, default chatml)."""
    cfg = compose([*overrides, f"model.pretrained={path}", "model.tokenizer=null", "model.gguf_file=null",
                   "model.vision.tower=null", "model.audio.encoder=null", "stage.init_from=null"])
    if not any(override_key(o) in ("data", "data.template") for o in overrides):
        cfg.data.template = "chatml"  # not the embedded default's (SmolLM2's, with its system prompt)
    return assemble(cfg, "hf", str(path), dtype)


def load_config(path: Path | None, overrides: list[str], dtype: str) -> Loaded:
    """The model of a composed config, as training starts it (pretrained weights, ``stage.init_from``)."""
    from vita.model.init_from import load_init

    cfg = compose(overrides)

    def weights(model) -> None:
        if cfg.stage.init_from:
            load_init(model, cfg.stage.init_from)

    return assemble(cfg, "config", "config " + " ".join(overrides), dtype, None, weights)


def _is_vita(p: Path | None) -> bool:
    from vita.interop import is_vita_folder

    return p is not None and is_vita_folder(p)


def load_vita_folder(path: Path, overrides: list[str], dtype: str) -> Loaded:
    """A released VITA whole-model folder (VITA-1.5, its FO variant, VITA-1.0): the model entry and shapes
    from its ``config.json`` (as ``stage.init_from=vita:PATH`` adopts them), its tokenizer, VITA's chat
    template for the family (unless ``data.template=`` is given), weights streamed from its shards."""
    from vita.interop import adopt_vita_config
    from vita.interop.config_map import FAMILIES
    from vita.model.init_from import load_init

    cfg = compose([*overrides, f"stage.init_from=vita:{path}"])
    imported = adopt_vita_config(cfg, path)
    if not any(override_key(o) == "data.template" for o in overrides):
        cfg.data.template = FAMILIES[imported.family].template
    allow_bin = bool(cfg.stage.init_allow_bin)

    def weights(model) -> None:
        load_init(model, f"vita:{path}", allow_bin=allow_bin)

    return assemble(cfg, "vita", str(path), dtype, path, weights)


register_target("vita", _is_vita, load_vita_folder)  # before "hf": a VITA folder also has a config.json
register_target("run", artefacts.is_run, load_run)
register_target("export", artefacts.is_export, load_export)
register_target("hf", artefacts.is_hf, load_hf)
register_target("config", _is_config, load_config)
