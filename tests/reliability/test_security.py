"""Static and unit checks: no pickle-loading of weights, weights written as safetensors, remote code
only when the config asks, media confined to its root, nothing in a data file executed.

Path escapes through ``..`` and absolute paths: tests/test_data_format.py::test_bad_samples_are_named;
through training: tests/test_data_check.py (``skipped/path_escapes_root``). Symlinks: here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vita.config import ModelConfig
from vita.data.schema import BadSample, resolve_media

PKG = Path(__file__).resolve().parents[2] / "vita"
FILES = sorted(PKG.rglob("*.py"))


def _calls(name: str, attr: str | None = None):
    """(file:line, call) for every ``name(...)`` or ``<x>.name(...)`` / ``attr.name(...)`` call in vita/."""
    for f in FILES:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func
            hit = (isinstance(fn, ast.Name) and fn.id == name and attr is None) or (
                isinstance(fn, ast.Attribute) and fn.attr == name
                and (attr is None or (isinstance(fn.value, ast.Name) and fn.value.id == attr)))
            if hit:
                yield f"{f.relative_to(PKG.parent)}:{node.lineno}", node


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def test_scanner_sees_the_package():
    assert len(FILES) > 30 and any(True for _ in _calls("load", "torch"))  # weights.py loads .pt files


def test_every_torch_load_is_weights_only():
    bad = [where for where, c in _calls("load", "torch") if not _is_const(_kw(c, "weights_only"), True)]
    assert not bad, f"torch.load without weights_only=True (can run pickled code): {bad}"


def test_no_pickle_or_eval_on_data():
    bad = [w for w, _ in _calls("save", "torch")]
    bad += [w for name in ("load", "loads") for w, _ in _calls(name, "pickle")]
    bad += [w for name in ("eval", "exec") for w, c in _calls(name) if isinstance(c.func, ast.Name)]  # not .eval()
    bad += [w for w, c in _calls("load", "yaml") if _kw(c, "Loader") is None or "Safe" not in ast.unparse(_kw(c, "Loader"))]
    bad += [w for w, _ in _calls("unsafe_load", "yaml")]
    bad += [w for w, c in _calls("load", "np") if _is_const(_kw(c, "allow_pickle"), True)]
    assert not bad, f"weights must be safetensors and data never executed; found: {bad}"


def test_save_pretrained_is_safetensors():
    bad = [w for w, c in _calls("save_pretrained") if _is_const(_kw(c, "safe_serialization"), False)]
    assert not bad, bad


def test_trust_remote_code_only_from_config():
    assert ModelConfig().trust_remote_code is False
    for where, c in _calls("from_pretrained"):
        v = _kw(c, "trust_remote_code")
        assert v is None or "trust_remote_code" in ast.unparse(v), f"{where}: trust_remote_code not from the config"
    # a literal True is only set under `if <cfg>.trust_remote_code:`
    for f in FILES:
        tree = ast.parse(f.read_text())
        guarded = {id(n) for i in ast.walk(tree) if isinstance(i, ast.If) and "trust_remote_code" in ast.unparse(i.test)
                   for n in ast.walk(i)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and _is_const(node.value, True) and "trust_remote_code" in ast.unparse(node):
                assert id(node) in guarded, f"{f}:{node.lineno} sets trust_remote_code=True unconditionally"


def test_symlink_out_of_the_media_root_is_rejected(tmp_path):
    root, outside = tmp_path / "media", tmp_path / "secret.png"
    root.mkdir()
    outside.write_bytes(b"x")
    (root / "link.png").symlink_to(outside)
    (root / "ok.png").write_bytes(b"x")
    assert resolve_media("ok.png", root, "image", "f:1", "s1") == (root / "ok.png").resolve()
    with pytest.raises(BadSample, match="path escapes root"):
        resolve_media("link.png", root, "image", "f:1", "s1")
    with pytest.raises(BadSample, match="path escapes root"):
        resolve_media("a/../../secret.png", root, "image", "f:1", "s1")
