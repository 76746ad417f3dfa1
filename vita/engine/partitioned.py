"""ZeRO-3 partitioned parameters: their real sizes, and building a model straight into its partitions.

Sizes of partitioned parameters: :mod:`vita.model.params` (re-exported here).

:func:`partitioned_build` is the context ``stage.init_from=vita:PATH`` builds the model in under
``engine.zero_stage=3``: DeepSpeed's ``zero.Init`` with the run's own DeepSpeed config (its dtype,
``offload_param`` device), so each module's parameters are partitioned as soon as that module
exists; weight initialisation is skipped (every tensor is loaded afterwards).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from vita.model.params import is_partitioned, ndim, numel  # noqa: F401  (re-exported)


def held_elements(model: nn.Module) -> tuple[int, int, int]:
    """``(elements this rank holds, elements of the model, parameters now gathered in full)``.

    A partitioned parameter counts its rank's slice (``ds_tensor``, padding included); any other
    parameter counts whole. The third figure counts partitioned parameters whose full data is
    present (0 outside ``GatheredParameters`` and the forward pass).
    """
    held = total = full = 0
    for p in model.parameters():
        total += numel(p)
        if is_partitioned(p):
            held += p.ds_tensor.numel()
            full += int(p.data.numel() > 0)
        else:
            held += p.numel()
    return held, total, full


def config_dtype(ds_config: dict) -> torch.dtype:
    """The parameter dtype of a DeepSpeed config (what ``zero.Init`` builds in)."""
    if ds_config.get("bf16", {}).get("enabled"):
        return torch.bfloat16
    return torch.float16 if ds_config.get("fp16", {}).get("enabled") else torch.float32


@contextlib.contextmanager
def partitioned_build(ds_config: dict) -> Iterator[None]:
    """Within this block new modules get ZeRO-3 partitioned parameters, not initialised.

    The dtype is the config's (:func:`config_dtype`; DeepSpeed 0.19 ignores an explicit ``dtype``
    on a machine without fp16 support). Tensors created in the block (buffers too) take that dtype.
    ``mem_efficient_linear`` stays off: DeepSpeed's replacement of ``F.linear`` would persist after
    the block and change the training math against a model partitioned by ``deepspeed.initialize``.
    """
    import deepspeed
    from transformers.initialization import no_init_weights
    from transformers.integrations.deepspeed import prevent_arange_dtype_change

    with no_init_weights(), prevent_arange_dtype_change(), \
            deepspeed.zero.Init(config_dict_or_path=ds_config, mem_efficient_linear=False):
        yield
