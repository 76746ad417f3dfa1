"""A readable console on any number of ranks: library noise filtered (each filter with its reason) and, on
ranks other than 0, only errors (``logging.all_ranks=true`` shows every rank's lines).

:func:`quiet_console` is called once at the start of a training job, before DeepSpeed, peft or bitsandbytes
are imported. Warnings that no filter names are shown once per process (Python's default shows them again
whenever any library enters ``warnings.catch_warnings``, i.e. every step). Files are not affected: the
run's log file, ``metrics.jsonl`` and the job logs under SLURM keep everything rank 0 writes.
"""

from __future__ import annotations

import logging
import os
import warnings

# (message regex, category, why it is not shown)
WARNING_FILTERS: list[tuple[str, type[Warning], str]] = [
    (r"`torch\.distributed\.\w+` is deprecated", FutureWarning,
     "DeepSpeed's ZeRO calls torch's old collective names (reduce_scatter_tensor, all_gather_into_tensor) every "
     "step; nothing in a vita config changes that, and the calls still work"),
]
# (logger, message start, why it is not shown)
LOG_FILTERS: list[tuple[str, str, str]] = [
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward",
     "bitsandbytes tries an optional CPU kernel from the Hugging Face Hub when it is imported (peft imports it "
     "for every LoRA run) and suggests trust_remote_code=True when that fails; vita asks for no remote code and "
     "bitsandbytes falls back to its own kernel"),
    ("kernels._internals.hf_hub", "Skipping publisher trust check",
     "the same optional kernel, offline (HF_HUB_OFFLINE=1): the Hub is not asked, and nothing is loaded from it"),
]


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def process_rank() -> int:
    """This process's rank from the launcher's environment (torchrun, SLURM), before any process group exists."""
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def quiet_console(all_ranks: bool = False, rank: int | None = None) -> None:
    """Install the filters above; on ranks > 0 (unless ``all_ranks``) console output keeps errors only."""
    rank = process_rank() if rank is None else rank
    for pattern, category, _why in WARNING_FILTERS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    warnings.filterwarnings("once", append=True)  # the rest: once per process, not once per catch_warnings
    for name, start, _why in LOG_FILTERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages((start,)))
    if rank == 0 or all_ranks:
        return
    warnings.simplefilter("ignore")  # rank 0 shows the same library warnings
    deepspeed_logger = logging.getLogger("DeepSpeed")  # its own console handler, no propagation: filter it here
    if not any(isinstance(f, _ErrorsOnly) for f in deepspeed_logger.filters):
        deepspeed_logger.addFilter(_ErrorsOnly())
    for h in logging.getLogger().handlers:  # Hydra's console handler; its file handler keeps every line
        if type(h) is logging.StreamHandler and not any(isinstance(f, _ErrorsOnly) for f in h.filters):
            h.addFilter(_ErrorsOnly())
