"""Mixtral's two layouts of one MoE layer's experts, as :class:`Link` regions of one tensor.

Transformers 4 (and VITA's checkpoints) store each expert apart: ``block_sparse_moe.experts.E.w1/w3/w2``;
transformers 5's module holds them fused: ``mlp.experts.gate_up_proj`` [E, 2F, H] (gate rows first, then up)
and ``mlp.experts.down_proj`` [E, H, F], with the router at ``mlp.gate``. The model layer needs the mapping
to load an export written expert by expert (:mod:`vita.model.init_from`); :mod:`vita.interop.keys` builds
VITA's whole key table on the same links.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

Index = tuple  # a tuple of ints / slices applied to the leading dims; () = the whole tensor


@dataclass(frozen=True)
class Link:
    """``vita_tensor[vita_index]`` is ``vita15_tensor[vita15_index]``."""

    vita: str
    vita15: str
    vita_index: Index = ()
    vita15_index: Index = ()


def moe_links(key: str, shapes: dict) -> list[Link]:
    """The links of one ``llm.*`` tensor: a rename, or the per-expert regions of a fused MoE tensor."""
    rest = key[len("llm."):]
    m = re.match(r"model\.layers\.(\d+)\.mlp\.(gate\.weight|experts\.gate_up_proj|experts\.down_proj)$", rest)
    if not m:
        return [Link(key, rest)]
    i, what = m.groups()
    base = f"model.layers.{i}.block_sparse_moe."
    if what == "gate.weight":
        return [Link(key, base + "gate.weight")]
    n_exp, rows = shapes[key][0], shapes[key][1]
    if what == "experts.down_proj":  # [E, H, F]: expert e's w2 [H, F]
        return [Link(key, f"{base}experts.{e}.w2.weight", (e,)) for e in range(n_exp)]
    f = rows // 2  # [E, 2F, H]: gate (w1) rows, then up (w3) rows
    return [link for e in range(n_exp) for link in (Link(key, f"{base}experts.{e}.w1.weight", (e, slice(0, f))),
                                                    Link(key, f"{base}experts.{e}.w3.weight", (e, slice(f, 2 * f))))]


def fuse_llm_experts(sd: dict[str, torch.Tensor], own: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """An LLM state dict with Mixtral's per-expert tensors (``block_sparse_moe.experts.E.w1/w3/w2``: what
    transformers 4 wrote and transformers 5's ``save_pretrained`` still writes) in the fused layout the
    module expects (``mlp.experts.gate_up_proj`` / ``down_proj``, ``mlp.gate``); other keys pass through.

    Args:
        sd: the LLM's tensors by HF name (``model.layers.0...``, ``lm_head.weight``).
        own: the module's tensor names -> shapes (names without ``llm.``).
    """
    if not any(".block_sparse_moe." in k for k in sd):
        return sd
    shapes = {"llm." + k: s for k, s in own.items()}
    out = dict(sd)
    for name, shape in own.items():
        links = moe_links("llm." + name, shapes)
        if name in sd or links[0].vita15 == name or not all(lk.vita15 in sd for lk in links):
            continue  # already fused, not an MoE tensor, or incomplete (reported by the caller's strict load)
        fused = torch.empty(shape, dtype=sd[links[0].vita15].dtype)
        for lk in links:
            fused[lk.vita_index] = sd[lk.vita15]
            out.pop(lk.vita15)
        out[name] = fused
    return out
