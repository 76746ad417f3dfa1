"""DeepSpeed's JIT-built shm op lives in the environment's own folder (one build per venv, not one per switch
between venvs) and rank 0 says so before building it (vita/engine/ds_ops.py)."""

from __future__ import annotations

import os
import sys

from vita.engine.ds_ops import SHM_OP, prepare_deepspeed_ops


def test_build_folder_is_the_environments_and_a_build_is_announced(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "")  # recorded, so that the value set below is undone too
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    (tmp_path / "venv").mkdir()
    prepare_deepspeed_ops(is_main=True)
    folder = tmp_path / "venv" / "torch_extensions"
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(folder)
    assert f"building DeepSpeed's {SHM_OP} op for this environment in {folder / SHM_OP}" in capsys.readouterr().out
    (folder / SHM_OP).mkdir(parents=True)
    (folder / SHM_OP / f"{SHM_OP}.so").write_bytes(b"")
    prepare_deepspeed_ops(is_main=True)
    assert capsys.readouterr().out == ""  # built: nothing to say


def test_a_set_folder_is_kept_and_other_ranks_say_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "mine"))
    prepare_deepspeed_ops(is_main=False)
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(tmp_path / "mine")
    assert capsys.readouterr().out == ""

