"""vita.artefacts: one module knows vita's files; detect(path) names what a folder is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vita import artefacts
from vita.errors import CheckpointError

VITA = Path(__file__).resolve().parents[1] / "vita"


def _folder(root: Path, name: str, files: dict[str, str]) -> Path:
    d = root / name
    d.mkdir()
    for f, text in files.items():
        (d / f).write_text(text)
    return d


def test_detect_names_each_kind(tmp_path):
    kinds = {
        "run": {artefacts.CONFIG_FILE: "{}"},
        "export": {artefacts.EXPORT_META: "{}", artefacts.HF_CONFIG: "{}"},
        "checkpoint": {artefacts.MANIFEST: "{}"},
        "vita": {artefacts.HF_CONFIG: json.dumps({"model_type": "vita-Qwen2"})},
        "hf": {artefacts.HF_CONFIG: json.dumps({"model_type": "qwen2"})},
    }
    for kind, files in kinds.items():
        assert artefacts.detect(_folder(tmp_path, kind, files)) == kind
    assert artefacts.detect(_folder(tmp_path, "empty", {})) is None
    assert artefacts.detect(None) is None


def test_export_meta_round_trip_and_a_clear_miss(tmp_path):
    artefacts.write_export_meta(tmp_path, {"step": 3})
    assert artefacts.read_export_meta(tmp_path) == {"step": 3}
    assert artefacts.find_export(tmp_path) == tmp_path
    with pytest.raises(CheckpointError, match=f"no {artefacts.EXPORT_META}"):
        artefacts.read_export_meta(tmp_path / "nothing")


@pytest.mark.parametrize("literal", ["vita_export.json", "model*.safetensors", "best.json", "vita_config.json",
                                     "MANIFEST.json", "mp_rank_00_model_states.pt"])
def test_artefact_names_are_spelled_in_one_module(literal):
    """Other modules ask vita.artefacts; a second spelling of a file name fails here."""
    where = sorted(str(p.relative_to(VITA)) for p in VITA.rglob("*.py") if literal in p.read_text())
    assert where == ["artefacts.py"], where
