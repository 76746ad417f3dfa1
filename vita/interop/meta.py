"""Build a model whose parameters live on the meta device (no memory), buffers on the CPU.

Buffers stay real because several are computed at construction and not saved (rotary
``inv_freq``, loss weights); parameters take no memory until :func:`materialise` puts the
loaded tensor in place, keeping tied parameters tied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def params_on_meta() -> Iterator[None]:
    """Within this block every newly registered ``nn.Parameter`` is moved to the meta device."""
    original = nn.Module.register_parameter

    def register(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(self, name, param)
        if param is not None and param.device.type != "meta":
            p = self._parameters[name]
            self._parameters[name] = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def owners(model: nn.Module) -> dict[str, list[tuple[nn.Module, str, bool]]]:
    """Tensor name (first alias) -> every (module, attribute, is_parameter) that holds that tensor."""
    first: dict[int, str] = {}
    out: dict[str, list[tuple[nn.Module, str, bool]]] = {}
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        for attr, t in [*((a, p) for a, p in mod._parameters.items()), *((a, b) for a, b in mod._buffers.items())]:
            if t is None:
                continue
            name = first.setdefault(id(t), f"{mod_name}.{attr}" if mod_name else attr)
            entry = (mod, attr, attr in mod._parameters)
            if entry not in out.setdefault(name, []):
                out[name].append(entry)
    return out


def materialise(holders: list[tuple[nn.Module, str, bool]], tensor: torch.Tensor) -> None:
    """Put ``tensor`` in place of a (meta) parameter or buffer, in every module that shares it."""
    mod, attr, is_param = holders[0]
    if is_param:
        old = mod._parameters[attr]
        new: torch.Tensor = nn.Parameter(tensor, requires_grad=old.requires_grad)
    else:
        new = tensor
    for mod, attr, is_param in holders:
        (mod._parameters if is_param else mod._buffers)[attr] = new


def meta_names(model: nn.Module) -> list[str]:
    """Parameters and buffers still on the meta device (not loaded)."""
    return [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
