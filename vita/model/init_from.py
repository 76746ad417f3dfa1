"""Start a stage from earlier weights: a vita export, a DeepSpeed checkpoint, or a plain HF LLM folder.

* a vita export (``<run>/final``, :func:`vita.artefacts.is_export`): the LLM weights (with any LoRA
  adapter of the earlier stage merged in) and every ``<group>.safetensors`` beside them;
* a checkpoint folder (``<run>/checkpoints/step_XXXXXXXX``): the full model state, consolidated
  from the DeepSpeed files (any ZeRO stage), LoRA merged;
* a plain Hugging Face LLM folder (``config.json`` + safetensors): the LLM only — encoders and
  projectors keep their own initialisation (VITA's strict reload could not do this).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from vita.artefacts import LLM_WEIGHTS, ZERO0_STATES, is_checkpoint, is_export, is_hf, llm_weight_files
from vita.errors import CheckpointError, ConfigError

log = logging.getLogger("vita")
InitSource = Callable[[nn.Module, Path, bool], list[str]]
INIT_SOURCES: dict[str, InitSource] = {}
"""``stage.init_from`` prefixes of other layouts -> ``load(model, path, allow_bin) -> groups loaded``."""


def register_init_source(prefix: str, load: InitSource) -> None:
    """Let ``stage.init_from=<prefix>PATH`` load with ``load`` (``vita.interop`` registers ``vita:``, VITA's layout)."""
    if prefix in INIT_SOURCES:
        raise ConfigError(f"stage.init_from prefix {prefix!r} is already registered")
    INIT_SOURCES[prefix] = load


def merge_lora_keys(sd: dict[str, torch.Tensor], scale_of: dict[str, float]) -> dict[str, torch.Tensor]:
    """Fold ``lora_A``/``lora_B`` pairs into their base weights; plain names come out.

    Args:
        sd: a state dict with peft-injected names (``x.base_layer.weight``, ``x.lora_A.default.weight``).
        scale_of: module prefix -> alpha / r; missing prefixes use the ``default`` entry.
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if ".lora_" in k:
            continue
        out[k.replace(".base_layer.", ".")] = v
    for k, a in sd.items():
        if ".lora_A." not in k:
            continue
        prefix = k.split(".lora_A.")[0]
        b = sd[k.replace(".lora_A.", ".lora_B.")]
        w = prefix + ".weight"
        scale = scale_of.get(prefix, scale_of.get("default", 1.0))
        out[w] = out[w] + scale * (b.float() @ a.float()).to(out[w].dtype)
    return out


def _load_into(module: nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    own = module.state_dict()
    own_plain = {k.replace(".base_layer.", "."): k for k in own if ".lora_" not in k}
    tied = {k for k in own_plain if k.endswith("lm_head.weight")}
    missing = sorted(set(own_plain) - set(sd) - tied)
    unexpected = sorted(set(sd) - set(own_plain))
    wrong = sorted(k for k in set(sd) & set(own_plain) if tuple(sd[k].shape) != tuple(own[own_plain[k]].shape))
    if missing or unexpected or wrong:
        shapes = [f"{k}: {tuple(sd[k].shape)} vs model {tuple(own[own_plain[k]].shape)}" for k in wrong[:5]]
        raise CheckpointError(
            f"{what} does not fit this model: missing {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}, wrong shapes {shapes} "
            "(is it from another backbone or size?)")
    with torch.no_grad():
        for k, v in sd.items():
            own[own_plain[k]].copy_(v)


def _with_adapter(path: Path, group: str, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Merge ``path/adapters/<group>`` (a PEFT adapter of an earlier LoRA stage) into ``sd``, if present."""
    folder = path / "adapters" / group
    if not (folder / "adapter_model.safetensors").is_file():
        return sd
    conf = json.loads((folder / "adapter_config.json").read_text())
    lora = {k.removeprefix("base_model.model.").replace(".lora_A.", ".lora_A.default.")
            .replace(".lora_B.", ".lora_B.default."): v
            for k, v in load_file(str(folder / "adapter_model.safetensors")).items()}
    plain = {k.replace(".weight", ".base_layer.weight") if k.replace(".weight", ".lora_A.default.weight") in lora
             else k: v for k, v in sd.items()}
    return merge_lora_keys({**plain, **lora}, {"default": conf["lora_alpha"] / conf["r"]})


def checkpoint_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The full model state of a DeepSpeed checkpoint folder: under ZeRO-0 the model states file holds
    it (``torch.load(weights_only=True)``); under ZeRO-1/2/3 it is consolidated from the partitions."""
    states = path / ZERO0_STATES
    if states.is_file() and not any(path.glob("*zero_pp_rank_*")):
        return torch.load(states, map_location="cpu", weights_only=True)["module"]
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(path.parent), tag=path.name)


def load_init(model: nn.Module, path: str | Path, lora_scale: dict[str, float] | None = None,
              allow_bin: bool = False) -> list[str]:
    """Load weights from ``path`` into ``model`` (before the stage is applied); returns the groups loaded.

    ``vita:PATH`` is VITA's layout (:mod:`vita.interop`): a whole-model folder, or its stage outputs
    ``mm_projector.bin`` / ``audio_adpter.bin`` for one group (``.bin`` only with ``allow_bin``).

    Args:
        lora_scale: ``group -> alpha / r`` of the run that wrote a checkpoint ``path`` with LoRA weights
            (e.g. from its saved config); they are merged into the base weights. Without it such a
            checkpoint is refused (the scale is not in the DeepSpeed files).
    """
    for prefix, load in INIT_SOURCES.items():  # vita:PATH (registered by vita.interop)
        if str(path).startswith(prefix):
            return load(model, Path(str(path)[len(prefix):]).expanduser(), allow_bin)
    path = Path(path)
    groups = model.module_groups()
    if is_checkpoint(path):
        sd = checkpoint_state_dict(path)
        if any(".lora_" in k for k in sd) and lora_scale:
            sd = _merge_checkpoint_lora(model, sd, lora_scale)
        if any(".lora_" in k for k in sd):
            raise CheckpointError(f"stage.init_from={path} holds LoRA weights; start from that run's export "
                                  "(<run dir>/final), which records the LoRA scale needed to merge them")
        loaded = []
        prefixes = model.group_prefixes()
        for name, module in groups.items():
            sub = {k[len(prefixes[name]) :]: v for k, v in sd.items() if k.startswith(prefixes[name])}
            if sub:
                _load_into(module, sub, f"checkpoint {path} (group {name})")
                loaded.append(name)
        return loaded
    export = is_export(path)
    if not is_hf(path) and not export:
        raise CheckpointError(f"stage.init_from={path}: not a vita export, checkpoint or HF model folder")
    llm_files = llm_weight_files(path)
    if not llm_files and not export:
        raise CheckpointError(f"stage.init_from={path}: no {LLM_WEIGHTS} (a QLoRA export: point at its base)")
    loaded = []
    if llm_files:
        _load_llm(groups["llm"], path, llm_files)
        loaded.append("llm")
    for name, module in groups.items():
        f = path / f"{name}.safetensors"
        if name != "llm" and f.is_file():
            _load_into(module, _with_adapter(path, name, load_file(str(f))), f"stage.init_from={f}")
            loaded.append(name)
    if not loaded:
        raise CheckpointError(f"stage.init_from={path}: nothing in it matches this model's groups "
                              f"({', '.join(groups)})")
    return loaded


def _merge_checkpoint_lora(model: nn.Module, sd: dict[str, torch.Tensor], lora_scale: dict[str, float]) -> dict:
    scale_of = {}
    for group, prefix in model.group_prefixes().items():
        for k in sd:
            if k.startswith(prefix) and ".lora_A." in k and group in lora_scale:
                scale_of[k.split(".lora_A.")[0]] = lora_scale[group]
    if any(k.split(".lora_A.")[0] not in scale_of for k in sd if ".lora_A." in k):
        return sd  # a group without its scale: refused by the caller
    return merge_lora_keys(sd, scale_of)


def _load_llm(llm: nn.Module, path: Path, llm_files: list[Path]) -> None:
    from vita.model.moe_layout import fuse_llm_experts

    sd: dict[str, torch.Tensor] = {}
    for f in llm_files:
        sd.update(load_file(str(f)))
    own = {k.replace(".base_layer.", "."): tuple(v.shape) for k, v in llm.state_dict().items() if ".lora_" not in k}
    sd = fuse_llm_experts(sd, own)  # Mixtral saved expert by expert (transformers 5 still writes w1/w3/w2)
    _load_into(llm, _with_adapter(path, "llm", sd), f"stage.init_from={path} (LLM)")
