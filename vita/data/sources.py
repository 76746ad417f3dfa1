"""Dataset formats: a ``cfg.data`` -> a :class:`Source` (random access to raw records).

``chatterbot`` is the bundled text corpus; ``vita`` is a mixture of VITA/LLaVA annotation files
(``data.datasets``), each with its media roots and a ratio, subsampled and shuffled by
``data.mixture_seed`` (identically on every rank). Records are read lazily: a JSONL line is
fetched through its byte offset when the sample is used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vita.data.schema import AnnotationFile
from vita.errors import DataError
from vita.registry import DATASETS


class Source:
    """Random access to raw records: ``read(i) -> (record, location, media roots, dataset name)``."""

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, i: int) -> tuple[object, str, dict, str]:
        raise NotImplementedError

    def dataset_of(self, i: int) -> str:
        """Name of the dataset record ``i`` comes from (without reading it)."""
        raise NotImplementedError

    def record_key(self, i: int) -> tuple[int, int]:
        """Where record ``i`` lives, as a sortable ``(file, record)``: equal for a record repeated by a ratio."""
        return (0, i)


class ListSource(Source):
    """Records already in memory (text corpora, tests)."""

    def __init__(self, records: list, name: str, roots: dict | None = None) -> None:
        self.records, self.name, self.roots = records, name, roots or {}

    def __len__(self) -> int:
        return len(self.records)

    def read(self, i: int):
        return self.records[i], f"{self.name}[{i}]", self.roots, self.name

    def dataset_of(self, i: int) -> str:
        return self.name


def _pick(n: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    whole, frac = int(ratio), ratio - int(ratio)
    extra = np.sort(rng.choice(n, int(n * frac), replace=False)) if frac else np.zeros(0, dtype=np.int64)
    return np.concatenate([np.tile(np.arange(n), whole), extra]).astype(np.int64)


class Mixture(Source):
    """Several annotation-file datasets, each subsampled by its ratio, then shuffled together."""

    def __init__(self, datasets, seed: int = 42, limit: int = 0) -> None:
        if not datasets:
            raise DataError("data.format=vita needs data.datasets: a list of {name, annotations, image_root, ...}")
        self.files: list[AnnotationFile] = []
        self.meta: list[tuple[dict, str]] = []  # per file: (roots, dataset name)
        refs = []
        for d_i, d in enumerate(datasets):
            if d.ratio < 0:
                raise DataError(f"dataset '{d.name}': ratio {d.ratio} must be >= 0")
            roots = {m: (Path(r) if r else None) for m, r in
                     (("image", d.image_root), ("video", d.video_root), ("audio", d.audio_root))}
            for m, r in roots.items():
                if r is not None and not r.is_dir():
                    raise DataError(f"dataset '{d.name}': {m}_root {r} is not a folder; fix it in conf/data")
            if not d.annotations:
                raise DataError(f"dataset '{d.name}': no annotation files; set its 'annotations' list")
            local = []
            for path in d.annotations:
                self.files.append(AnnotationFile(path))
                self.meta.append((roots, d.name))
                f_i = len(self.files) - 1
                local.extend((f_i, r) for r in range(len(self.files[-1])))
            pick = _pick(len(local), d.ratio, np.random.default_rng([seed, d_i]))
            refs.extend(local[j] for j in pick.tolist())
        order = np.random.default_rng([seed]).permutation(len(refs))
        self.refs = np.array([refs[j] for j in order.tolist()], dtype=np.int64).reshape(-1, 2)
        if limit:
            self.refs = self.refs[:limit]

    def __len__(self) -> int:
        return len(self.refs)

    def read(self, i: int):
        f_i, r = (int(x) for x in self.refs[i])
        f = self.files[f_i]
        roots, name = self.meta[f_i]
        return f.read(r), f.where(r), roots, name

    def dataset_of(self, i: int) -> str:
        return self.meta[int(self.refs[i][0])][1]

    def record_key(self, i: int) -> tuple[int, int]:
        f_i, r = (int(x) for x in self.refs[i])
        return (f_i, r)


@DATASETS.register("chatterbot")
def chatterbot(data_cfg) -> list[dict]:
    """The chatterbot-corpus conversations bundled as the demo data."""
    from vita.data.chatterbot import load_conversations

    return load_conversations(data_cfg.language, list(data_cfg.files) or None)


@DATASETS.register("vita")
def vita_mixture(data_cfg) -> Mixture:
    """VITA/LLaVA annotation files listed in ``data.datasets``."""
    return Mixture(data_cfg.datasets, data_cfg.mixture_seed, data_cfg.limit)
