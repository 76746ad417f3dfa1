"""Write a folder in VITA's layout: sharded safetensors + ``model.safetensors.index.json``,
``config.json`` and the tokenizer files, one shard in memory at a time."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from vita.artefacts import llm_weight_files
from vita.errors import ConfigError
from vita.interop.shards import INDEX

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
                   "generation_config.json")
DEFAULT_SHARD = 5 * 2**30


def parse_size(text: str | int) -> int:
    """``"5GB"``, ``"500MB"``, ``"64KB"`` or a byte count -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ConfigError(f"max shard size {text!r}: write e.g. 5GB, 500MB or a byte count")
    unit = (m.group(2) or "B").upper().replace("I", "")
    return int(float(m.group(1)) * {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30, "TB": 2**40}[unit])


def plan_shards(entries: list[tuple[str, tuple[int, ...], torch.dtype]], max_bytes: int) -> list[list[str]]:
    """Split tensor names (in order) into shards of at most ``max_bytes`` (a larger tensor gets its own)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape, dtype in entries:
        n = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    return shards


def write_shards(out: Path, entries: list[tuple[str, tuple[int, ...], torch.dtype]],
                 produce: Callable[[str], torch.Tensor], max_bytes: int = DEFAULT_SHARD,
                 progress: bool = True) -> dict[str, str]:
    """Write ``model-0000i-of-0000N.safetensors`` and the index; ``produce(name)`` makes each tensor."""
    out.mkdir(parents=True, exist_ok=True)
    for old in [*llm_weight_files(out), out / INDEX]:
        old.unlink(missing_ok=True)
    groups = plan_shards(entries, max_bytes)
    n = len(groups)
    weight_map: dict[str, str] = {}
    total = 0
    bar = tqdm(total=len(entries), desc="writing VITA shards", unit="tensor", disable=not progress, leave=False)
    for i, names in enumerate(groups, 1):
        fname = f"model-{i:05d}-of-{n:05d}.safetensors"
        shard = {}
        for name in names:
            t = produce(name)
            shard[name] = t if t.is_contiguous() else t.contiguous()
            total += t.numel() * t.element_size()
            weight_map[name] = fname
            bar.update()
        save_file(shard, str(out / fname), metadata={"format": "pt"})
        del shard
    bar.close()
    (out / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return weight_map


def write_config(out: Path, config: dict) -> None:
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))


def copy_tokenizer(src: Path, out: Path) -> list[str]:
    """Copy the tokenizer (and generation config) files that ``src`` has; returns their names."""
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file() and (src / name).resolve() != (out / name).resolve():
            shutil.copyfile(src / name, out / name)
            copied.append(name)
    return copied
