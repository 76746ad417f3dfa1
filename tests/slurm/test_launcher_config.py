"""conf/hydra/launcher/slurm.yaml composes, takes site values from ``slurm.*`` and keeps run dirs site-free
(no cluster needed)."""

from __future__ import annotations

import subprocess

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from tests.conftest import PY, ROOT, vita_env
from vita.config import CONF_DIR, register_configs, register_resolvers


def launcher(*overrides: str) -> dict:
    register_configs()
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)
    GlobalHydra.instance().clear()
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def test_defaults_fit_a_cpu_node_and_requeue():
    lc = launcher()
    assert lc["_target_"].endswith("SlurmLauncher")
    assert lc["tasks_per_node"] == 1 and lc["gpus_per_node"] is None and lc["nodes"] == 1
    assert lc["signal_delay_s"] > 0 and lc["max_num_timeout"] > 0
    assert lc["additional_parameters"] == {"requeue": True}
    assert lc["name"] == "vita-demo"


def test_site_values_come_from_slurm_keys_and_one_task_per_gpu():
    lc = launcher("slurm.partition=gpu", "slurm.account=proj", "slurm.qos=high", "slurm.gpus_per_node=8",
                  "slurm.cpus_per_task=12", "slurm.mem_gb=480", "slurm.setup=[module load cuda]")
    assert (lc["partition"], lc["account"], lc["qos"]) == ("gpu", "proj", "high")
    assert (lc["gpus_per_node"], lc["tasks_per_node"], lc["cpus_per_task"], lc["mem_gb"]) == (8, 8, 12, 480)
    assert lc["setup"] == ["module load cuda"]
    assert launcher("slurm.gpus_per_node=8", "slurm.tasks_per_node=1")["tasks_per_node"] == 1


@pytest.mark.parametrize("override", ["slurm.partition=gpu", "slurm.gpus_per_node=8", "slurm.setup=[echo]",
                                      "hydra.launcher.nodes=2"])
def test_where_a_job_runs_does_not_change_its_run_dir(override):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "optim.lr=1e-4", override],
                      return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert cfg.hydra.job.override_dirname == "optim.lr:1e-4"


def test_no_cluster_is_one_line_with_how_to_start_one_and_exit_2(tmp_path):
    """With no reachable controller (here: a SLURM_CONF that does not exist) a submit ends at once with one line,
    no traceback, naming the local cluster's start script."""
    proc = subprocess.run([PY, "-m", "vita.run", "-m", "hydra/launcher=slurm", "experiment=smoke", "name=nocl",
                           f"output_root={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=vita_env(SLURM_CONF=str(tmp_path / "no-such-slurm.conf")))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no SLURM"), lines
    assert "bash launch/local-slurm/start.sh" in lines[0] and "conf/local/default.yaml" in lines[0]
    assert not list(tmp_path.rglob("*.yaml")), list(tmp_path.rglob("*"))  # no sweep dir of a sweep never started


def test_the_local_example_sets_slurm_values_that_compose():
    lc = launcher("local=example", "slurm.partition=gpu")
    assert lc["partition"] == "gpu" and lc["setup"] == []
