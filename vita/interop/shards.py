"""Reading a VITA folder's weights: ``model.safetensors.index.json`` + shards, one tensor at a time.

Headers are parsed directly from the safetensors format (8-byte length, JSON header, raw data),
so the names, shapes and dtypes of every tensor are known before any data is read, and each
tensor is then read with ``readinto`` into its own buffer: no memory map stays resident, so
the process holds the model plus one tensor, never a shard and never a second copy.

``.bin`` weight files (``pytorch_model*.bin``, VITA's ``mm_projector.bin`` / ``audio_adpter.bin``)
are read only when the caller allows them, with ``torch.load(weights_only=True, mmap=True)``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vita.errors import CheckpointError

INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: its file, shape, dtype and byte range (``None`` for ``.bin`` files)."""

    file: Path
    shape: tuple[int, ...]
    dtype: torch.dtype
    offsets: tuple[int, int] | None = None
    stored_name: str | None = None
    """The name inside the file, where the caller renamed it (a ``.bin`` without the ``model.`` prefix)."""


@dataclass
class WeightFiles:
    """Every tensor of a checkpoint folder, by name, read from the file headers only."""

    folder: Path
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Names, shapes, dtypes and byte offsets of the tensors in one safetensors file."""
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > 100_000_000:
                raise ValueError(f"header length {n} is implausible")
            header = json.loads(fh.read(n))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such shard") from None
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a safetensors file ({e}); re-download or re-export it") from None
    start = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] not in DTYPES:
            raise CheckpointError(f"{path}: tensor {name} has dtype {meta['dtype']}, which vita cannot read")
        a, b = meta["data_offsets"]
        out[name] = TensorInfo(path, tuple(meta["shape"]), DTYPES[meta["dtype"]], (start + a, start + b))
    return out


def list_weights(folder: Path, allow_bin: bool = False) -> WeightFiles:
    """The tensors of a whole-model folder: the index and its shards, or a single ``model.safetensors``.

    Raises:
        CheckpointError: no weights, a shard the index names is absent, a key the index places in a
            shard that lacks it, a key in two shards, or ``.bin`` weights without ``allow_bin``.
    """
    folder = Path(folder)
    wf = WeightFiles(folder)
    index = folder / INDEX
    if index.is_file():
        try:
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{index}: unreadable index ({e!r}); it needs a 'weight_map'") from None
        shards = sorted(set(weight_map.values()))
        absent = [s for s in shards if not (folder / s).is_file()]
        if absent:
            raise CheckpointError(f"{index} names shard(s) {', '.join(absent)} that are not in {folder} "
                                  "(an incomplete download? fetch the missing files)")
        where: dict[str, str] = {}
        for s in shards:
            path = folder / s
            wf.files.append(path)
            for name, info in read_header(path).items():
                if name in wf.tensors:
                    raise CheckpointError(f"tensor {name} is in two shards: {where[name]} and {s}")
                wf.tensors[name], where[name] = info, s
        stray = sorted(set(weight_map) - set(where))
        if stray:
            raise CheckpointError(f"{index} places {len(stray)} tensor(s) in shards that lack them: "
                                  + ", ".join(f"{k} (in {weight_map[k]})" for k in stray[:6]))
        moved = sorted(k for k in where if k in weight_map and weight_map[k] != where[k])
        if moved:
            raise CheckpointError(f"{index} disagrees with the shards about {moved[0]} "
                                  f"(index: {weight_map[moved[0]]}, found in {where[moved[0]]})")
        unlisted = sorted(set(where) - set(weight_map))
        if unlisted:
            raise CheckpointError(f"{index} does not list {len(unlisted)} tensor(s) found in the shards: "
                                  + ", ".join(f"{k} (in {where[k]})" for k in unlisted[:6]))
        return wf
    single = folder / "model.safetensors"
    if single.is_file():
        wf.files.append(single)
        wf.tensors.update(read_header(single))
        return wf
    bins = sorted(folder.glob("pytorch_model*.bin")) + sorted(folder.glob("*.pt"))
    if bins:
        return list_bin(bins, allow_bin, folder)
    shards = sorted(folder.glob("*.safetensors"))
    hint = f" (found {', '.join(p.name for p in shards[:4])}, but no {INDEX})" if shards else ""
    raise CheckpointError(f"{folder}: no {INDEX} or model.safetensors{hint}; a VITA folder holds its whole "
                          "model as sharded safetensors")


def list_bin(files: list[Path], allow_bin: bool, folder: Path | None = None) -> WeightFiles:
    """Tensors of ``.bin``/``.pt`` files (``torch.load(weights_only=True)``), refused unless ``allow_bin``."""
    if not allow_bin:
        raise CheckpointError(f"{files[0]}: a pickled weight file (.bin/.pt), not safetensors; vita reads those only "
                              "when allowed (stage.init_allow_bin=true / allow_bin=True), and then with "
                              "torch.load(weights_only=True). Better: convert it to safetensors")
    wf = WeightFiles(Path(folder or files[0].parent))
    for f in files:
        wf.files.append(f)
        for name, t in load_bin(f).items():
            if name in wf.tensors:
                raise CheckpointError(f"tensor {name} is in two files: {wf.tensors[name].file.name} and {f.name}")
            wf.tensors[name] = TensorInfo(f, tuple(t.shape), t.dtype)
    return wf


def load_bin(path: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict through ``torch.load(weights_only=True, mmap=True)``: tensors only, no code."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - name the file, keep the cause short
        raise CheckpointError(f"{path}: unreadable weight file ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors")
    return obj


def iter_tensors(wf: WeightFiles, names: set[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` file by file, each tensor read into its own fresh buffer."""
    by_file: dict[Path, list[str]] = {}
    for name, info in wf.tensors.items():
        if names is None or name in names:
            by_file.setdefault(info.file, []).append(name)
    for path in wf.files:
        todo = by_file.get(path, [])
        if not todo:
            continue
        if path.suffix != ".safetensors":
            sd = load_bin(path)
            for name in todo:
                yield name, sd[wf.tensors[name].stored_name or name]
            del sd
            continue
        with open(path, "rb") as fh:
            for name in sorted(todo, key=lambda n: wf.tensors[n].offsets[0]):
                yield name, _read(fh, wf.tensors[name])


def _read(fh, info: TensorInfo) -> torch.Tensor:
    a, b = info.offsets
    buf = torch.empty(b - a, dtype=torch.uint8)
    fh.seek(a)
    view = memoryview(buf.numpy())
    got = 0
    while got < b - a:
        n = fh.readinto(view[got:])
        if not n:
            raise CheckpointError(f"{info.file}: truncated (a tensor ends at byte {b}, the file sooner); re-download it")
        got += n
    return buf.view(info.dtype).reshape(info.shape)
