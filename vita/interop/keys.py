"""vita's parameter names <-> VITA's checkpoint key names (``vita-1.5.md`` §1-§4).

One :class:`Link` says that a region of a vita tensor *is* a region of a VITA tensor. Most links
are plain renames (whole tensor to whole tensor); two layouts differ in shape:

* InternViT's fused ``attn.qkv`` (VITA) is transformers' ``q_proj``/``k_proj``/``v_proj`` (vita),
  three row blocks of one tensor;
* Mixtral's per-expert ``block_sparse_moe.experts.E.w1/w3/w2`` (VITA, transformers 4.x) are rows
  of transformers 5's fused ``mlp.experts.gate_up_proj`` [E, 2F, H] (gate rows first, then up)
  and the slices of ``mlp.experts.down_proj`` [E, H, F].

The names (VITA side, under ``VITAQwen2ForCausalLM`` and its siblings):

=================  ==========================================  =====================================
group              vita                                        VITA
=================  ==========================================  =====================================
llm                ``llm.model.*``, ``llm.lm_head.weight``     ``model.embed_tokens|layers|norm.*``,
                                                               ``lm_head.weight``
vision_tower       ``vision_tower.model.*`` (transformers)     ``model.vision_tower.vision_tower.*``
                                                               (OpenGVLab InternViT)
vision_projector   ``vision_projector.layers.N.*``             ``model.mm_projector.N.*``
audio_encoder      ``audio_encoder.encoder.*``,                ``model.audio_encoder.encoder.*``
                   (``encoder.enc.0.{conv,out}.*``)            (``encoder.enc.0.core.{conv,out}.*``),
                   ``audio_encoder.prompt_embeddings.weight``  ``model.audio_encoder.prompt_embeddings.weight``
audio_projector    ``audio_projector.{conv1d,norm,linear}.*``  ``model.audio_encoder.adpter.{conv1d2,bn2,project}.*``
heads              ``state_head.*``                            ``predictor_head.*``
=================  ==========================================  =====================================

:func:`plan_keys` builds the whole table for a model from its parameter names and shapes (a
model on the meta device is enough); a name with no rule is an error, never skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from vita.errors import CheckpointError
from vita.model.moe_layout import Index, Link, fuse_llm_experts  # noqa: F401  (re-exported)
from vita.model.moe_layout import moe_links as _llm
from vita.model.whale import SUBSAMPLING, SUBSAMPLING_UPSTREAM, to_upstream

VISION = "model.vision_tower.vision_tower."
AUDIO = "audio_encoder.encoder."
ADAPTER = {"conv1d": "conv1d2", "norm": "bn2", "linear": "project"}
_VIT_LAYER = {"attention.projection_layer": "attn.proj", "lambda_1": "ls1", "lambda_2": "ls2",
              "layernorm_before": "norm1", "layernorm_after": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_VIT_EMBED = {"embeddings.cls_token": "embeddings.class_embedding",
              "embeddings.position_embeddings": "embeddings.position_embedding",
              "embeddings.patch_embeddings.projection.weight": "embeddings.patch_embedding.weight",
              "embeddings.patch_embeddings.projection.bias": "embeddings.patch_embedding.bias"}


@dataclass
class KeyPlan:
    """Every link of one model, with the shapes on both sides."""

    links: list[Link] = field(default_factory=list)
    vita_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    vita15_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def by_vita15(self) -> dict[str, list[Link]]:
        out: dict[str, list[Link]] = {}
        for link in self.links:
            out.setdefault(link.vita15, []).append(link)
        return out

    def by_vita(self) -> dict[str, list[Link]]:
        out: dict[str, list[Link]] = {}
        for link in self.links:
            out.setdefault(link.vita, []).append(link)
        return out

    def numel(self) -> int:
        """Elements on the VITA side (equal to the vita side: every element is linked once)."""
        return sum(torch.Size(s).numel() for s in self.vita15_shapes.values())


def model_tensors(model: nn.Module) -> dict[str, nn.Parameter | torch.Tensor]:
    """A model's parameters (tied aliases once, under their first name) and persistent buffers."""
    out: dict[str, nn.Parameter | torch.Tensor] = dict(model.named_parameters())
    for mod_name, mod in model.named_modules():
        for b_name, buf in mod._buffers.items():
            if buf is not None and b_name not in mod._non_persistent_buffers_set:
                out[f"{mod_name}.{b_name}" if mod_name else b_name] = buf
    return out


def _vision(key: str, shapes: dict) -> list[Link]:
    rest = key[len("vision_tower.model."):]
    if rest in _VIT_EMBED:
        return [Link(key, VISION + _VIT_EMBED[rest])]
    m = re.match(r"encoder\.layer\.(\d+)\.(.+?)(?:\.(weight|bias))?$", rest)
    if not m:
        return []
    i, name, kind = m.groups()
    suffix = f".{kind}" if kind else ""
    pre = f"{VISION}encoder.layers.{i}."
    qkv = re.match(r"attention\.([qkv])_proj$", name)
    if qkv:  # rows [q | k | v] of the fused qkv
        sizes = [shapes[f"vision_tower.model.encoder.layer.{i}.attention.{p}_proj{suffix}"][0] for p in "qkv"]
        j = "qkv".index(qkv.group(1))
        start = sum(sizes[:j])
        return [Link(key, f"{pre}attn.qkv{suffix}", (), (slice(start, start + sizes[j]),))]
    if name in _VIT_LAYER:
        return [Link(key, f"{pre}{_VIT_LAYER[name]}{suffix}")]
    return []


def _vita15_name(key: str, shapes: dict) -> list[Link]:
    group = key.split(".", 1)[0]
    if group == "llm":
        return _llm(key, shapes)
    if group == "vision_tower" and key.startswith("vision_tower.model."):
        return _vision(key, shapes)
    if group == "vision_projector":
        m = re.match(r"vision_projector\.layers\.(\d+)\.(weight|bias)$", key)
        return [Link(key, f"model.mm_projector.{m.group(1)}.{m.group(2)}")] if m else []
    if group == "audio_encoder":
        if key.startswith(AUDIO):  # VITA nests the Conv2d subsampling under enc.0.core (whale.to_upstream)
            return [Link(key, "model." + AUDIO + to_upstream(key[len(AUDIO):]))]
        if key == "audio_encoder.prompt_embeddings.weight":
            return [Link(key, "model." + key)]
        return []
    if group == "audio_projector":
        m = re.match(r"audio_projector\.(conv1d|norm|linear)\.(weight|bias)$", key)
        return [Link(key, f"model.audio_encoder.adpter.{ADAPTER[m.group(1)]}.{m.group(2)}")] if m else []
    if group == "state_head":
        return [Link(key, "predictor_head." + key.split(".", 1)[1])]
    return []


def plan_keys(model: nn.Module) -> KeyPlan:
    """The key table of an :class:`~vita.model.omni.OmniModel` (parameters may be on the meta device).

    Raises:
        CheckpointError: a parameter or buffer that VITA's layout has no name for (e.g. a LoRA
            layer still unmerged, or a tower VITA does not ship), listed by name.
    """
    tensors = model_tensors(model)
    plan = KeyPlan(vita_shapes={k: tuple(v.shape) for k, v in tensors.items()})
    unmapped = []
    for key in tensors:
        links = _vita15_name(key, plan.vita_shapes)
        if not links:
            unmapped.append(key)
        plan.links.extend(links)
    if unmapped:
        raise CheckpointError(f"{len(unmapped)} vita tensor(s) have no name in VITA's layout: "
                              + ", ".join(unmapped[:8]) + (" ..." if len(unmapped) > 8 else "")
                              + " (VITA ships InternViT towers, mlpNx_gelu/linear projectors and the whale "
                                "encoder + subsampling adapter; merge LoRA before exporting)")
    for name, links in plan.by_vita15().items():
        plan.vita15_shapes[name] = _vita15_shape(links, plan.vita_shapes)
    return plan


def _vita15_shape(links: list[Link], vita_shapes: dict) -> tuple[int, ...]:
    """The VITA tensor's shape: one vita region (rename, expert slice) or row blocks stacked (qkv)."""
    parts = [tuple(torch.empty(vita_shapes[lk.vita], device="meta")[lk.vita_index].shape) for lk in links]
    if len(links) == 1 and links[0].vita15_index == ():
        return parts[0]
    rows = max(lk.vita15_index[0].stop for lk in links)
    return (rows, *parts[0][1:])


def misnamed_subsampling(names: set[str] | dict) -> list[str]:
    """The audio subsampling keys of ``names`` spelled without VITA's ``core`` (``model.audio_encoder.encoder.enc.0.conv.*``,
    as vita wrote them before it followed ``whale/module/component/subsampling.py``)."""
    old = "model." + AUDIO + SUBSAMPLING
    return sorted(k for k in names if k.startswith(old) and not k.startswith("model." + AUDIO + SUBSAMPLING_UPSTREAM))
