"""The embedded demo corpus: English multi-turn conversations from ``chatterbot-corpus``.

The package ships YAML files ``{"categories": [...], "conversations": [[turn, turn, ...], ...]}``.
Turns alternate user / assistant, starting with the user.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from vita.errors import DataError


def corpus_dir(language: str = "english") -> Path:
    """Folder of the installed corpus for ``language``."""
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or spec.origin is None:
        raise DataError(
            "the demo corpus is not installed: run `pip install chatterbot-corpus` (make demo does it)"
        )
    path = Path(spec.origin).parent / "data" / language
    if not path.is_dir():
        langs = sorted(p.name for p in path.parent.iterdir() if p.is_dir())
        raise DataError(f"chatterbot-corpus has no language '{language}'; available: {', '.join(langs)}")
    return path


def load_conversations(language: str = "english", files: list[str] | None = None) -> list[dict]:
    """Read the corpus as VITA-style samples ``{"id", "conversations": [{"from", "value"}]}``.

    Conversations with fewer than two turns carry no supervision and are left out; every
    turn is converted to a string (the YAML holds a few numbers).
    """
    root = corpus_dir(language)
    paths = sorted(root.glob("*.yml")) if not files else [root / f for f in files]
    samples: list[dict] = []
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: no such corpus file; files: {sorted(p.name for p in root.glob('*.yml'))}")
        # libyaml's safe loader when built with it: the same safe load, ten times faster
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        for i, conv in enumerate(doc.get("conversations") or []):
            if not isinstance(conv, list):  # a bare string is one turn, not a list of characters
                conv = [conv]
            turns = [str(t).strip() for t in conv]
            if len(turns) < 2:
                continue
            if len(turns) % 2:  # a trailing user turn has no answer to learn from
                turns = turns[:-1]
            roles = ["human", "gpt"] * (len(turns) // 2)
            samples.append(
                {
                    "id": f"{path.stem}-{i}",
                    "conversations": [{"from": r, "value": t} for r, t in zip(roles, turns)],
                }
            )
    return samples
