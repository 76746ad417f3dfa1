"""A quiet install and console: the wheel builds without setuptools' "package would be ignored" warnings
and holds every module and asset; loading a trained run does not announce a mean-and-covariance
initialisation of embedding rows that its own weights replace a moment later."""

from __future__ import annotations

import shutil
import subprocess
import zipfile

from tests.conftest import PY, ROOT, find_run, quiet, run_vita, vita_env


def test_wheel_builds_quietly_with_every_module_and_asset(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("vita", "setup.cfg", "pyproject.toml", "README.md"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copyfile)(ROOT / name, src / name)
    p = subprocess.run([PY, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v", "-w", str(tmp_path / "dist"),
                        str(src)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    log = p.stdout + p.stderr
    assert "would be ignored" not in log and "absent from the `packages` configuration" not in log, log[-3000:]
    (wheel,) = (tmp_path / "dist").glob("vita-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(f.relative_to(ROOT)) for f in (ROOT / "vita").rglob("*.py")}
    assert modules <= names, sorted(modules - names)[:5]
    assets = {str(f.relative_to(ROOT)) for f in (ROOT / "vita" / "assets").rglob("*") if f.is_file()}
    assert assets and assets <= names, sorted(assets - names)[:5]
    assert not any("__pycache__" in n for n in names)


def test_editable_install_is_a_plain_path_file_without_warnings(tmp_path):
    """``make install`` does ``pip install -e .``: setuptools' PEP 660 hook must take its plain ``.pth`` path
    (``package_dir = .``), not the meta-path finder that prints "Editable installation ... be careful with
    folders". The hook runs here into a temp folder, so the venv's own install is left alone."""
    code = ("import sys; from setuptools import build_meta as b; "
            "print(b.build_editable(sys.argv[1]))")
    p = subprocess.run([PY, "-W", "default", "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    log = p.stdout + p.stderr
    assert "meta path finder" not in log and "be careful" not in log and "!!" not in log, log[-3000:]
    (wheel,) = tmp_path.glob("vita-*.whl")
    pth = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".pth")]
    assert pth and str(ROOT) in zipfile.ZipFile(wheel).read(pth[0]).decode(), pth


def test_loading_a_trained_run_does_not_announce_mean_resizing(tmp_path):
    """The run's LLM starts from a pretrained folder with fewer embedding rows than the run's tokenizer: loading
    the run resizes the table and then fills it from the checkpoint, without transformers' multivariate-normal note."""
    import torch
    from omegaconf import OmegaConf

    from vita.config import ASSETS, ModelConfig
    from vita.model import build_model

    pre = tmp_path / "pretrained"
    torch.manual_seed(0)
    build_model(OmegaConf.structured(ModelConfig(backbone="tiny-qwen2")), vocab_size=1000).llm.save_pretrained(pre)
    tok = ASSETS / "tokenizers" / "chatterbot-bpe"
    out = tmp_path / "outputs"
    run_vita(["experiment=chatterbot_tiny", f"model.pretrained={pre}", f"model.tokenizer={tok}", "data.limit=8",
              "train.max_steps=1", "engine.micro_batch_size=4", *quiet("rs", out)])
    run = find_run(out, "rs")
    code = ("import sys, torch; from vita.infer import load_target; m = load_target(sys.argv[1]).model; "
            "print('rows', m.llm.get_input_embeddings().num_embeddings)")
    p = subprocess.run([PY, "-c", code, str(run)], cwd=ROOT, env=vita_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "rows 10" in p.stdout and int(p.stdout.split("rows")[1]) > 1000  # the table was resized ...
    assert "multivariate normal" not in p.stdout + p.stderr  # ... silently: the trained rows are loaded next
