"""Export to VITA's layout (``python -m vita.export RUN --format vita``).

From a vita export (``<run>/final``: the LLM as an HF folder, each other group as
``<group>.safetensors``, LoRA adapters under ``adapters/<group>``): the model is built on the
meta device only to know every tensor's name and shape, then each VITA tensor is made from the
files — LoRA merged in (``W + alpha/r * B @ A``), fused (qkv, Mixtral experts) where VITA fuses
— and written shard by shard with ``model.safetensors.index.json``, VITA's ``config.json`` and the
tokenizer files. VITA's loader reads the folder as it is (``mm_vision_tower`` /
``mm_audio_encoder`` keep the source folder's paths when the run started from one).
"""

from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors import safe_open

from vita.artefacts import EXPORT_META, find_export, read_export_meta
from vita.errors import CheckpointError
from vita.interop.config_map import HF_META, read_config, vita_config_from_model
from vita.interop.keys import KeyPlan, plan_keys
from vita.interop.meta import params_on_meta
from vita.interop.shards import iter_tensors, list_weights, read_header
from vita.interop.writer import DEFAULT_SHARD, copy_tokenizer, write_config, write_shards
from vita.model.tokenizer_files import make_portable

log = logging.getLogger("vita")
GROUP_PREFIX = {"llm": "llm.", "vision_tower": "vision_tower.", "vision_projector": "vision_projector.",
                "audio_encoder": "audio_encoder.", "audio_projector": "audio_projector.", "heads": "state_head."}


def _lora(final: Path, group: str) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float]:
    """``module prefix -> (A, B)`` of ``final/adapters/<group>`` and its scale (empty without one)."""
    folder = final / "adapters" / group
    if not (folder / "adapter_model.safetensors").is_file():
        return {}, 1.0
    conf = json.loads((folder / "adapter_config.json").read_text())
    r = conf["r"]
    scale = conf["lora_alpha"] / (math.sqrt(r) if conf.get("use_rslora") else r)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        for k in f.keys():
            if ".lora_A." in k or ".lora_B." in k:
                mod, ab = k.removeprefix("base_model.model.").split(".lora_")
                pairs.setdefault(mod, {})[ab[0]] = f.get_tensor(k)
    return {m: (p["A"], p["B"]) for m, p in pairs.items()}, scale


class ExportSource:
    """Every vita tensor of an export folder, by its full vita name, read lazily with LoRA merged."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.where: dict[str, tuple[Path, str]] = {}
        llm = list_weights(final)
        for name, info in llm.tensors.items():
            self.where["llm." + name] = (info.file, name)
        self._llm = llm
        self.dtypes: dict[str, torch.dtype] = {"llm." + k: v.dtype for k, v in llm.tensors.items()}
        for group, prefix in GROUP_PREFIX.items():
            f = final / f"{group}.safetensors"
            if group == "llm" or not f.is_file():
                continue
            for k, info in read_header(f).items():
                self.where[prefix + k] = (f, k)
                self.dtypes[prefix + k] = info.dtype
        self.lora = {g: _lora(final, g) for g in GROUP_PREFIX}
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def get(self, name: str) -> torch.Tensor:
        if name in self._cache:
            self._cache.move_to_end(name)
            return self._cache[name]
        file, key = self.where[name]
        with safe_open(str(file), "pt") as fh:
            t = fh.get_tensor(key)
        group = next(g for g, p in GROUP_PREFIX.items() if name.startswith(p))
        pairs, scale = self.lora[group]
        mod = name[len(GROUP_PREFIX[group]):].removesuffix(".weight")
        if name.endswith(".weight") and mod in pairs:
            a, b = pairs[mod]
            t = (t.float() + scale * (b.float() @ a.float())).to(t.dtype)
        self._cache[name] = t
        while len(self._cache) > 2:
            self._cache.popitem(last=False)
        return t


def _meta_model(final: Path, model_cfg: dict):
    """The export's OmniModel on the meta device (names and shapes only)."""
    from vita.config import ModelConfig
    from vita.model import build_model

    llm_config = read_config(final)
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), model_cfg)
    if cfg.quantization:
        raise CheckpointError(f"{final} is a QLoRA export (its LLM weights are the base's); merge it first with "
                              "python -m vita.export SRC OUT, then export that")
    cfg.pretrained = None
    cfg.vision.pretrained = cfg.vision.projector_pretrained = None
    cfg.audio.pretrained = cfg.audio.projector_pretrained = None
    cfg.overrides = {k: v for k, v in llm_config.items() if k not in HF_META and k not in ("id2label", "label2id")}
    with params_on_meta():
        return build_model(cfg)


def _dims(model) -> dict:
    d: dict = {"state_classes": model.state_head.out_features if model.state_head is not None else 0}
    if model.vision_tower is not None:
        vc = model.vision_tower.model.config
        d["vision_hidden"] = vc.hidden_size
        d["vision_heads"] = vc.num_attention_heads
        d["vision_config"] = {"hidden_size": vc.hidden_size, "intermediate_size": vc.intermediate_size,
                              "num_hidden_layers": vc.num_hidden_layers, "image_size": model.vision_tower.image_size,
                              "patch_size": model.vision_tower.patch_size, "layer_norm_eps": vc.layer_norm_eps,
                              "qkv_bias": bool(vc.attention_bias), "norm_type": "layer_norm",
                              "drop_path_rate": vc.drop_path_rate}
    return d


def _source(meta: dict) -> Path | None:
    """The VITA folder the run started from (``stage.init_from=vita:PATH``), if it is still there."""
    init = str(meta.get("init_from") or "")
    if not init.startswith("vita:"):
        return None
    folder = Path(init[5:])
    if (folder / "config.json").is_file():
        return folder
    log.warning("the run started from %s, which is gone: VITA's mm_vision_tower / mm_audio_encoder paths are "
                "written as placeholders; set them in config.json", init)
    return None


def export_vita(src: str | Path, out: str | Path, max_shard_bytes: int = DEFAULT_SHARD,
                dtype: torch.dtype | None = None, progress: bool = True) -> Path:
    """Write ``out/`` in VITA's layout from a run dir or vita export ``src``; returns ``out``.

    Args:
        max_shard_bytes: largest shard (a single bigger tensor gets a shard of its own).
        dtype: cast every tensor (VITA ships bfloat16); None keeps the stored dtypes.
    """
    final = find_export(Path(src))
    out = Path(out)
    meta = read_export_meta(final)
    if "model" not in meta:
        raise CheckpointError(f"{final}/{EXPORT_META} records no model config; re-export the run with this vita")
    model = _meta_model(final, meta["model"])
    plan = plan_keys(model)
    source = ExportSource(final)
    _check_sources(plan, source, final)
    by15 = plan.by_vita15()

    def produce(name: str) -> torch.Tensor:
        links = by15[name]
        if "llm." + name in source.where:  # an LLM tensor under its HF name (= VITA's; Mixtral saved per expert)
            t = source.get("llm." + name)
        elif len(links) == 1 and not links[0].vita_index and not links[0].vita15_index:
            t = source.get(links[0].vita)
        else:
            first = source.get(links[0].vita)
            t = torch.empty(plan.vita15_shapes[name], dtype=first.dtype)
            for lk in links:
                part = source.get(lk.vita)
                t[lk.vita15_index] = part[lk.vita_index] if lk.vita_index else part
        return t.to(dtype) if dtype is not None else t

    def stored(name: str) -> torch.dtype:
        return dtype or source.dtypes.get("llm." + name) or source.dtypes[by15[name][0].vita]

    entries = [(n, plan.vita15_shapes[n], stored(n)) for n in by15]
    store_dtype = str(entries[0][2]).removeprefix("torch.") if entries else None
    source_folder = _source(meta)
    template = read_config(source_folder) if source_folder else None
    config = vita_config_from_model(read_config(final), meta["model"], _dims(model), template, store_dtype,
                                    meta.get("data"))  # first: a model VITA has no type for writes nothing
    write_shards(out, entries, produce, max_shard_bytes, progress)
    write_config(out, config)
    # VITA's own tokenizer files when the run started from VITA (vita only adds its placeholder tokens)
    copy_tokenizer(final, out)
    make_portable(out)  # an export from an older vita: transformers 5's spelling -> 4's
    if source_folder is not None:
        copy_tokenizer(source_folder, out)
    log.info("VITA layout written to %s (%s, %d tensors)", out, config["model_type"], len(entries))
    return out


def _check_sources(plan: KeyPlan, source: ExportSource, final: Path) -> None:
    have = set(source.where)
    by_vita = plan.by_vita()
    missing = sorted(v for v in plan.vita_shapes
                     if v not in have and not all("llm." + lk.vita15 in have for lk in by_vita[v]))
    direct = {"llm." + k for k in plan.vita15_shapes}
    unexpected = sorted(have - set(plan.vita_shapes) - direct - {"llm.lm_head.weight"})
    if missing or unexpected:
        raise CheckpointError(f"{final}: the export does not match its recorded model: missing "
                              f"{missing[:6]}, unexpected {unexpected[:6]} (a stage.export=trainable export holds only "
                              "some groups; export a full one)")


def files_of(folder: Path) -> dict[str, Path]:
    """``name -> file`` of a VITA folder's tensors (for tests and tools)."""
    return {k: v.file for k, v in list_weights(folder).tensors.items()}


def read_all(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a VITA folder (small folders: tests, tools)."""
    wf = list_weights(folder)
    return dict(iter_tensors(wf))
