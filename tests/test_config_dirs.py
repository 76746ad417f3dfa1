"""User config folders outside the repo: ``--config-dir``/``-cd``, ``hydra.searchpath`` on the command line
and the search path of ``conf/local`` (``config_searchpath``) compose for ``vita.run --cfg job`` and ``vita.check``; an unknown option lists the
options of every search path."""

from __future__ import annotations

import subprocess
import uuid

import pytest
import yaml

from tests.conftest import PY, ROOT, vita_env
from vita.cli import compose_cli, precheck, prepare_run_argv
from vita.config import CONF_DIR
from vita.errors import ConfigError


def data_yaml(name: str) -> str:
    return yaml.safe_dump({"defaults": ["chatterbot", "_self_"], "name": name, "limit": 12, "files": ["greetings.yml"]})


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """Two site config folders, each with one data config that extends the packaged chatterbot one."""
    a, b = tmp_path_factory.mktemp("site_a"), tmp_path_factory.mktemp("site_b")
    for d, name in ((a, "mine"), (b, "theirs")):
        (d / "data").mkdir()
        (d / "data" / f"{name}.yaml").write_text(data_yaml(name))
    return a, b


@pytest.fixture
def local_with_searchpath(dirs):
    """A conf/local option whose search path (config_searchpath) names site_b (removed afterwards)."""
    name = f"pytest_{uuid.uuid4().hex[:8]}"
    f = CONF_DIR / "local" / f"{name}.yaml"
    f.write_text("# @package _global_\n" + yaml.safe_dump({"config_searchpath": [f"file://{dirs[1]}"]}))
    try:
        yield name
    finally:
        f.unlink()


def run(module: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", module, *args], cwd=ROOT, env=vita_env(), capture_output=True, text=True,
                          timeout=300)


def test_compose_cli_honours_config_dir_searchpath_and_local(dirs, local_with_searchpath):
    """The shared compose function finds data configs in -cd, --config-dir=, hydra.searchpath and conf/local."""
    a, b = dirs
    assert compose_cli(["-cd", str(a), "data=mine"]).data.name == "mine"
    assert compose_cli([f"--config-dir={a}", "data=mine", "data.limit=3"]).data.limit == 3
    assert compose_cli([f"hydra.searchpath=[file://{b}]", "data=theirs"]).data.name == "theirs"
    assert compose_cli([f"local={local_with_searchpath}", "data=theirs"]).data.files == ["greetings.yml"]
    with pytest.raises(ConfigError, match="unknown data 'theirs'"):
        compose_cli(["data=theirs"])  # not without the search path
    assert prepare_run_argv([f"local={local_with_searchpath}", "data=theirs"])[0] == f"hydra.searchpath=['file://{b}']"
    bad = CONF_DIR / "local" / f"{local_with_searchpath}_hydra.yaml"
    bad.write_text(f"# @package _global_\nhydra:\n  searchpath: [file://{b}]\n")
    try:  # Hydra refuses hydra.searchpath outside the primary config: one line that says what to write
        assert "write it as 'config_searchpath: [file://DIR, ...]'" in precheck([f"local={bad.stem}", "data=theirs"])
    finally:
        bad.unlink()


def test_unknown_option_lists_options_of_every_search_path(dirs):
    """A miss names the folders searched and lists the packaged options and those of both user folders."""
    a, b = dirs
    err = precheck(["-cd", str(a), f"hydra.searchpath=[file://{b}]", "data=nope"])
    assert err is not None and err.startswith("unknown data 'nope' (no data/nope.yaml in conf, ")
    assert str(a) in err and str(b) in err
    options = err.split("Options: ", 1)[1]
    assert "chatterbot" in options and "demo_bad" in options
    assert f"mine ({a})" in options and f"theirs ({b})" in options
    assert precheck(["-cd", str(a / "missing"), "data=mine"]) == f"--config-dir {a / 'missing'}: no such folder"


def test_run_cfg_job_composes_user_data(dirs):
    """python -m vita.run --cfg job with a data config from --config-dir and from hydra.searchpath."""
    a, b = dirs
    for args, name in ((["--config-dir", str(a), "data=mine"], "mine"),
                       ([f"hydra.searchpath=[file://{b}]", "data=theirs"], "theirs")):
        p = run("vita.run", [*args, "--cfg", "job"])
        assert p.returncode == 0, p.stderr[-2000:]
        cfg = yaml.safe_load(p.stdout)
        assert cfg["data"]["name"] == name and cfg["data"]["limit"] == 12
    p = run("vita.run", ["-cd", str(a), f"hydra.searchpath=[file://{b}]", "data=nope", "--cfg", "job"])
    assert p.returncode == 2 and f"mine ({a})" in p.stderr and f"theirs ({b})" in p.stderr


def test_check_runs_on_user_data(dirs, local_with_searchpath):
    """python -m vita.check with -cd and with hydra.searchpath checks the user's data set (exit 0), and an
    unknown option is exit 2; vita.run --cfg job takes the conf/local search path too."""
    a, b = dirs
    p = run("vita.check", ["-cd", str(a), "data=mine", "--workers=1"])
    assert p.returncode == 0 and "== mine: 12 samples, 12 ok" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
    p = run("vita.check", [f"hydra.searchpath=[file://{b}]", "data=theirs", "--workers=1"])
    assert p.returncode == 0 and "== theirs: 12 samples" in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
    p = run("vita.run", [f"local={local_with_searchpath}", "data=theirs", "--cfg", "job"])
    assert p.returncode == 0 and yaml.safe_load(p.stdout)["data"]["name"] == "theirs", p.stderr[-2000:]
    p = run("vita.check", ["data=theirs", "--workers=1"])
    assert p.returncode == 2 and "unknown data 'theirs'" in p.stderr


def test_chat_and_eval_take_config_dirs(dirs, tmp_path, capsys):
    """vita.chat and vita.eval compose through the same path: a model config from --config-dir, a data
    config from hydra.searchpath; an unknown option names the options of the extra folder too."""
    import json

    from vita.chat import main as chat_main
    from vita.eval.__main__ import main as eval_main

    site = tmp_path / "site"
    (site / "model").mkdir(parents=True)
    (site / "model" / "my_lm.yaml").write_text(yaml.safe_dump({"defaults": ["tiny_qwen2", "_self_"]}))
    rc = chat_main(["--config-dir", str(site), "model=my_lm", "data=chatterbot", "--prompt", "hi",
                    "--max-new-tokens", "2", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    line = json.loads(out.out.strip().splitlines()[-1])
    from tests.conftest import cut_at_stop, greedy_ids
    from vita.infer import load_target

    loaded = load_target(None, ["--config-dir", str(site), "model=my_lm", "data=chatterbot"])
    assert line["ids"] == cut_at_stop(greedy_ids(loaded.model.llm, line["prompt_ids"], 2), loaded.stop)
    rc = eval_main(["-cd", str(site), "model=my_lmm", f"hydra.searchpath=[file://{dirs[0]}]", "data=mine"])
    err = capsys.readouterr().err
    assert rc == 2 and "my_lm" in err and "tiny_qwen2" in err, err
