"""Stream a VITA checkpoint into a model, tensor by tensor, checking every name and shape first.

:func:`check_fit` compares the key table (:mod:`vita.interop.keys`) with the file headers and
reports every missing, unexpected and mis-shaped tensor, naming its file, before any data is
read. :func:`stream_into` then reads one tensor at a time and puts it in place of the model's
(meta or real) parameter: a plain rename hands the loaded tensor over without a copy; a fused
tensor (InternViT ``qkv``, Mixtral experts) is split or assembled, and its pieces are released
as soon as the target is complete. Peak memory = the model + the largest tensor in flight.

Into a model built in ZeRO-3 partitions (:func:`vita.engine.partitioned.partitioned_build`), every
rank reads the same tensors in the same order and each parameter is filled through DeepSpeed's
``GatheredParameters([param], modifier_rank=0)``: gathered whole for that one copy, written by rank
0, broadcast and re-partitioned on exit. Peak per rank = its partitions + the tensor in flight
(read, gathered, and the collectives' buffers: about three times its size). A :class:`GatherLog` counts what went that way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from vita.errors import CheckpointError
from vita.interop.keys import KeyPlan, misnamed_subsampling
from vita.interop.meta import materialise, meta_names, owners
from vita.interop.shards import WeightFiles, iter_tensors
from vita.model.params import is_partitioned, numel

log = logging.getLogger("vita")


def _short(items: list[str], n: int = 6) -> str:
    return "; ".join(items[:n]) + (f"; ... (+{len(items) - n} more)" if len(items) > n else "")


def check_fit(plan: KeyPlan, wf: WeightFiles, only: set[str] | None = None, what: str = "") -> None:
    """Raise one :class:`CheckpointError` listing every missing, unexpected and wrong-shape tensor.

    Args:
        plan: the model's key table.
        wf: the checkpoint's tensors (from the headers).
        only: check just these VITA names (loading one group); None = the whole model.
    """
    expected = {k: s for k, s in plan.vita15_shapes.items() if only is None or k in only}
    missing = sorted(set(expected) - set(wf.tensors))
    unexpected = sorted(set(wf.tensors) - set(plan.vita15_shapes)) if only is None else []
    wrong = sorted(k for k in set(expected) & set(wf.tensors) if tuple(wf.tensors[k].shape) != tuple(expected[k]))
    if not (missing or unexpected or wrong):
        return
    old = misnamed_subsampling(unexpected)
    if old:
        raise CheckpointError(f"{what or wf.folder}: the audio encoder's subsampling tensors are named without VITA's "
                              f"'core' ({', '.join(old)}); VITA's whale encoder holds them as enc.0.core.* "
                              "(whale/module/component/subsampling.py), so VITA cannot load this folder either: "
                              "re-export it with this vita (python -m vita.export RUN --format vita)")
    parts = []
    if missing:
        parts.append(f"missing {len(missing)}: {_short(missing)} (in no file of {wf.folder.name})")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)}: " + _short([f"{k} (in {wf.tensors[k].file.name})" for k in unexpected]))
    if wrong:
        parts.append(f"wrong shape {len(wrong)}: " + _short([f"{k} is {list(wf.tensors[k].shape)} in "
                                                              f"{wf.tensors[k].file.name}, the model expects "
                                                              f"{list(expected[k])}" for k in wrong]))
    raise CheckpointError(f"{what or wf.folder}: the checkpoint does not fit the model ({' | '.join(parts)}); "
                          "is config.json from the same checkpoint, or was a tensor renamed?")


@dataclass
class GatherLog:
    """What loading into ZeRO-3 partitions did: each parameter filled alone, none found whole."""

    params: int = 0
    """Parameters filled (each one partitioned before and after)."""
    gathered: int = 0
    """Of them, those filled through ``GatheredParameters`` (the others: each rank its own slice)."""
    largest: int = 0
    """Elements of the largest of them: the most read (or gathered) at once."""


def stream_into(model: nn.Module, plan: KeyPlan, wf: WeightFiles, dtype: torch.dtype | None = None,
                only: set[str] | None = None, progress: bool = True, partitioned: GatherLog | None = None) -> int:
    """Read the checkpoint's tensors one by one into ``model``; returns the number of elements loaded.

    Args:
        dtype: cast to this dtype; None keeps each tensor's stored dtype.
        only: load just these VITA names (one group); the model's other tensors are left as they are.
        partitioned: ``model`` was built in ZeRO-3 partitions: fill each parameter through
            ``GatheredParameters`` (a collective: every rank calls this with the same files) and
            count it here; buffers (never partitioned) are put in place as on the meta device.
    """
    hold = owners(model)
    by15 = plan.by_vita15()
    pending = {}  # vita name -> [buffer, pieces still to come]
    need = {k: len(v) for k, v in plan.by_vita().items()}
    names = set(by15) if only is None else set(by15) & only
    total = 0
    bar = tqdm(total=len(names), desc="loading VITA weights", unit="tensor", disable=not progress, leave=False)
    for name, t in iter_tensors(wf, names):
        total += t.numel()
        for link in by15[name]:
            piece = t[link.vita15_index] if link.vita15_index else t
            if dtype is not None:
                piece = piece.to(dtype)
            if need[link.vita] == 1 and not link.vita_index:
                _place(hold[link.vita], piece if piece.is_contiguous() else piece.contiguous(), partitioned)
                continue
            if link.vita not in pending:
                pending[link.vita] = [torch.empty(plan.vita_shapes[link.vita], dtype=piece.dtype), need[link.vita]]
            buf = pending[link.vita]
            buf[0][link.vita_index].copy_(piece)
            buf[1] -= 1
            if buf[1] == 0:
                _place(hold[link.vita], pending.pop(link.vita)[0], partitioned)
        del t
        bar.update()
    bar.close()
    if pending:
        raise CheckpointError(f"{wf.folder}: incomplete fused tensors {sorted(pending)[:4]} (a piece was not loaded)")
    return total


def _place(holders: list, tensor: torch.Tensor, partitioned: GatherLog | None = None) -> None:
    mod, attr, is_param = holders[0]
    current = (mod._parameters if is_param else mod._buffers)[attr]
    if partitioned is not None and is_param:
        _fill_partitioned(current, tensor, partitioned, attr)
    elif current.device.type == "meta" or partitioned is not None:
        materialise(holders, tensor)
    else:  # a built model (``stage.init_from`` on an existing model): copy into it, keeping its dtype
        with torch.no_grad():
            current.copy_(tensor)


def own_slice_in_memory(param: nn.Parameter) -> bool:
    """This rank's partition of ``param`` is a plain slice in memory (not on NVMe, not quantised, no
    ZeRO++ secondary copy): the loader can write it directly."""
    import torch.distributed as dist

    part = param.ds_tensor
    return (part.final_location is None and not hasattr(part, "ds_quant_scale")
            and getattr(param, "ds_secondary_tensor", None) is None
            and part.numel() * dist.get_world_size(group=param.ds_process_group) == param.ds_numel_aligned)


def _fill_partitioned(param: nn.Parameter, tensor: torch.Tensor, counter: GatherLog, attr: str) -> None:
    """Put ``tensor`` into a ZeRO-3 parameter: each rank copies its own slice into ``ds_tensor`` (no
    collective, nothing whole), or, where the partition is not a plain slice in memory (NVMe offload,
    quantised or secondary partitions), through ``GatheredParameters`` (rank 0 writes, all re-partition)."""
    import deepspeed
    import torch.distributed as dist
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    if not is_partitioned(param) or param.ds_status != ZeroParamStatus.NOT_AVAILABLE or param.data.numel():
        raise RuntimeError(f"loading into ZeRO-3 partitions: parameter '{attr}' is not partitioned "
                           "(built outside vita.engine.partitioned.partitioned_build?)")
    part, group = param.ds_tensor, param.ds_process_group
    if own_slice_in_memory(param):
        # DeepSpeed's layout: the flat parameter, padded to world x partition, rank r holding [r*n, (r+1)*n)
        n = part.numel()
        start = n * dist.get_rank(group=group)
        k = max(0, min(n, param.ds_numel - start))
        if k:
            with torch.no_grad():
                part.narrow(0, 0, k).copy_(tensor.reshape(-1).narrow(0, start, k))
    else:
        with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
            if dist.get_rank() == 0:
                with torch.no_grad():
                    param.data.copy_(tensor)
        counter.gathered += 1
    if param.data.numel():  # still partitioned; check it
        raise RuntimeError(f"loading into ZeRO-3 partitions: parameter '{attr}' stayed whole after its copy")
    counter.params += 1
    counter.largest = max(counter.largest, numel(param))


def check_complete(model: nn.Module, what: str) -> None:
    """Raise if any parameter or buffer is still on the meta device after loading."""
    left = meta_names(model)
    if left:
        raise CheckpointError(f"{what}: {len(left)} model tensor(s) got no weights: {_short(left)}")
    log.debug("%s: every tensor loaded", what)
