"""A truncated, corrupted or foreign weights file: a CheckpointError naming the file, never a crash
deep in a loader or a silent partial load."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from vita.errors import CheckpointError
from vita.model.weights import read_state_dict


@pytest.mark.parametrize("kind", ["truncated-safetensors", "garbage-pt", "empty-bin", "not-a-dict"])
def test_unreadable_weights_are_named(tmp_path, kind):
    if kind == "truncated-safetensors":
        f = tmp_path / "model.safetensors"
        save_file({"w": torch.ones(64, 64)}, str(f))
        f.write_bytes(f.read_bytes()[:1000])
    elif kind == "garbage-pt":
        f = tmp_path / "model.pt"
        f.write_bytes(b"this is not a checkpoint" * 10)
    elif kind == "empty-bin":
        f = tmp_path / "pytorch_model.bin"
        f.write_bytes(b"")
    else:
        f = tmp_path / "list.pt"
        torch.save([torch.ones(2)], f)
    with pytest.raises(CheckpointError, match=str(f)):
        read_state_dict(f)
    with pytest.raises(CheckpointError, match=str(f)):  # and through a folder holding it
        read_state_dict(tmp_path)


def test_missing_weights_named(tmp_path):
    with pytest.raises(CheckpointError, match="no such weights file"):
        read_state_dict(tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        read_state_dict(tmp_path)
