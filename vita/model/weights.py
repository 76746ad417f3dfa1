"""Loading encoder / projector weights: read a file, adapt its key layout, load strictly.

Every mismatch is a :class:`~vita.errors.CheckpointError` whose one line names the keys:
missing, unexpected, or of the wrong shape (with both shapes).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from vita.errors import CheckpointError, VitaError

StateDict = dict[str, torch.Tensor]


def read_state_dict(path: str | Path) -> StateDict:
    """A ``.safetensors`` file, a ``.pt``/``.bin`` file (``weights_only`` torch.load), or a folder holding one."""
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*.safetensors")) or sorted(p.glob("*.pt")) + sorted(p.glob("*.bin"))
        if not found:
            raise CheckpointError(f"{p}: no *.safetensors, *.pt or *.bin weights in this folder")
        sd: StateDict = {}
        for f in found:
            sd.update(read_state_dict(f))
        return sd
    if not p.is_file():
        raise CheckpointError(f"{p}: no such weights file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated / corrupted / not a weights file: name it, keep the cause
        if isinstance(e, VitaError):
            raise
        raise CheckpointError(f"{p}: unreadable weights file ({type(e).__name__}: {str(e)[:300]}); "
                              "re-download or re-export it") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p}: expected a state dict, found {type(obj).__name__}")
    return obj


def _short(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" ... (+{len(keys) - n} more)" if len(keys) > n else "")


def load_strict(module: nn.Module, sd: StateDict, what: str) -> None:
    """Load ``sd`` into ``module``; raise naming missing, unexpected and wrong-shape keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                   for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    problems = []
    if missing:
        problems.append(f"missing keys: {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_short(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {_short(wrong)}")
    if problems:
        raise CheckpointError(f"{what}: checkpoint does not fit the model; " + "; ".join(problems)
                              + " (check the registry key / overrides match the checkpoint)")
    module.load_state_dict(sd, strict=True)


def strip_prefix(sd: StateDict, prefixes: tuple[str, ...]) -> StateDict:
    """Drop the first of ``prefixes`` that every key starts with (e.g. ``vision_model.``)."""
    for pre in prefixes:
        if sd and all(k.startswith(pre) for k in sd):
            return {k[len(pre):]: v for k, v in sd.items()}
    return sd


def select_prefix(sd: StateDict, prefixes: tuple[str, ...]) -> StateDict:
    """Keep only the keys under the first of ``prefixes`` that any key has, stripped of it.

    Lets a component load from a whole-model checkpoint (e.g. an InternVL-Chat file holding
    ``vision_model.*``, ``mlp1.*`` and ``language_model.*``). Without such keys ``sd`` is returned as is.
    """
    for pre in prefixes:
        part = {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}
        if part:
            return part
    return sd


def internvit_from_opengvlab(sd: StateDict) -> StateDict:
    """OpenGVLab InternViT keys -> transformers' ``InternVLVisionModel`` keys.

    Original: ``embeddings.class_embedding``, ``embeddings.patch_embedding``, ``embeddings.position_embedding``,
    ``encoder.layers.i.{attn.qkv, attn.proj, ls1, ls2, norm1, norm2, mlp.fc1, mlp.fc2}``; the fused qkv
    is split into q/k/v. Keys already in the transformers layout pass through unchanged.
    """
    if not any(k.startswith("encoder.layers.") or k.startswith("embeddings.class_embedding") for k in sd):
        return sd
    out: StateDict = {}
    rename = {"attn.proj": "attention.projection_layer", "ls1": "lambda_1", "ls2": "lambda_2",
              "norm1": "layernorm_before", "norm2": "layernorm_after", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for k, v in sd.items():
        m = re.match(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", k) or re.match(r"encoder\.layers\.(\d+)\.(ls1|ls2)()$", k)
        if k == "embeddings.class_embedding":
            out["embeddings.cls_token"] = v
        elif k == "embeddings.position_embedding":
            out["embeddings.position_embeddings"] = v
        elif k.startswith("embeddings.patch_embedding."):
            out["embeddings.patch_embeddings.projection." + k.rsplit(".", 1)[1]] = v
        elif m and m.group(2) == "attn.qkv":
            i, kind = m.group(1), m.group(3)
            for name, part in zip(("q_proj", "k_proj", "v_proj"), v.chunk(3, dim=0)):
                out[f"encoder.layer.{i}.attention.{name}.{kind}"] = part.contiguous()
        elif m and m.group(2) in rename:
            suffix = f".{m.group(3)}" if m.group(3) else ""
            out[f"encoder.layer.{m.group(1)}.{rename[m.group(2)]}{suffix}"] = v
        else:
            out[k] = v
    return out


def load_into(module: nn.Module, path: str | Path, what: str, prefixes: tuple[str, ...] = (),
              adapt: Callable[[StateDict], StateDict] | None = None) -> None:
    """Read ``path``, strip a common prefix, adapt the key layout, and load strictly."""
    sd = strip_prefix(select_prefix(read_state_dict(path), prefixes), ("model.",))
    if adapt is not None:
        sd = adapt(sd)
    load_strict(module, sd, f"{what} ({path})")
