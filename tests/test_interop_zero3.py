"""``stage.init_from=vita:PATH`` under ZeRO-3 (2 ranks, gloo): the model is built in its partitions and
each tensor streamed into them, so a rank holds its half, never the whole; training from it is the
training of the old path (every rank loads the whole model, ``deepspeed.initialize`` partitions it,
``stage.init_partitioned=false``), to the bit; a LoRA stage runs on it the same way.

What "never the whole" is measured by: every rank's log line, written after the import from the real
partitions (``ds_tensor`` sizes summed), and the loader's count of parameters it filled through
``GatheredParameters`` one at a time (each found partitioned before and after: checked in the loader,
which raises otherwise). Peak RSS is in the line too but not asserted: at this size it is the
interpreter's, not the model's. The 2-rank runs are ``slow`` (~3 min together); two fast tests check
which imports take this path and that both ways of filling a partition (own slice; GatheredParameters
for partitions that are no plain slice) give the meta-device load's tensors bitwise.
"""

from __future__ import annotations

import math
import re
import subprocess

import pytest
import torch

from tests.conftest import PY, ROOT, find_run, load_final, losses, quiet, run_vita, vita_env
from tests.interop_fixtures import make_vita_folder

LINE = re.compile(r"into ZeRO-3 partitions: rank (\d) holds ([\d,]+) of ([\d,]+) parameter elements .*?; "
                  r"(\d+) parameters filled one at a time \((\d+) through GatheredParameters\), the largest ([\d,]+) elements")
COMMON = ["experiment=smoke", "data.limit=16", "engine.micro_batch_size=4", "train.max_steps=3", "engine=zero3",
          "optim.weight_decay=0.1",  # decay: its groups read each matrix's dimensions, partitioned or not
          "logging.all_ranks=true"]  # each rank's own partition line (ranks > 0 print errors only by default)
LORA = ["stage=lora_llm", "stage.groups.vision_tower.mode=frozen"]  # (more overrides: a run dir name over 255)


def _int(s: str) -> int:
    return int(s.replace(",", ""))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vita_z3")
    src = make_vita_folder(root / "release", "vita-Qwen2", seed=3)
    out = {}
    for name, extra in (("new", []), ("old", ["stage.init_partitioned=false"]),
                        ("lora_new", LORA), ("lora_old", [*LORA, "stage.init_partitioned=false"])):
        proc = run_vita([*quiet(name, root / "out"), *COMMON, f"stage.init_from=vita:{src}", *extra], world=2)
        out[name] = (find_run(root / "out", name), proc.stdout + proc.stderr)
    return src, out


def _model_numels(src) -> list[int]:
    """Element counts of the folder's model parameters (built on the meta device, nothing read)."""
    from vita.interop import compose_from_vita
    from vita.interop.meta import params_on_meta
    from vita.model import build_model

    imported, _ = compose_from_vita(src)
    with params_on_meta():
        model = build_model(imported.model, vocab_size=1024)
    return [p.numel() for p in model.parameters()]


@pytest.mark.slow
def test_each_rank_holds_half_of_the_imported_model(runs):
    src, out = runs
    numels = _model_numels(src)
    found = {int(m[0]): m[1:] for m in LINE.findall(out["new"][1])}
    assert sorted(found) == [0, 1], out["new"][1][-3000:]
    half = sum(math.ceil(n / 2) for n in numels)  # ZeRO-3 pads each partition to ceil(numel / world)
    for rank, (held, total, filled, gathered, largest) in found.items():
        assert _int(total) == sum(numels)
        assert _int(held) == half, (rank, held)  # the real partitions: ~1/2, not the whole
        assert 0.49 < _int(held) / _int(total) < 0.51
        assert int(filled) == len(numels)  # every parameter filled alone, partitioned before and after
        assert int(gathered) == 0  # each rank copied its own slice: no parameter was ever whole
        assert _int(largest) == max(numels) < sum(numels) / 4  # the most read at once: one tensor
    assert not LINE.search(out["old"][1])  # the old path loads the whole model on each rank


@pytest.mark.slow
def test_partitioned_import_trains_as_the_old_path(runs):
    _, out = runs
    new, old = out["new"][0], out["old"][0]
    assert len(losses(new)) == 3
    assert losses(new) == pytest.approx(losses(old), abs=1e-5)
    a, b = load_final(new), load_final(old)
    assert sorted(a) == sorted(b)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    for part in ("vision_tower", "audio_encoder", "vision_projector", "audio_projector"):
        from safetensors.torch import load_file

        x, y = load_file(str(new / "final" / f"{part}.safetensors")), load_file(str(old / "final" / f"{part}.safetensors"))
        assert max((x[k] - y[k]).abs().max().item() for k in x) <= 1e-5, part


@pytest.mark.slow
def test_lora_stage_on_the_partitioned_import(runs, tmp_path):
    from vita.interop.exporter import read_all

    src, out = runs
    new, old = out["lora_new"][0], out["lora_old"][0]
    assert LINE.search(out["lora_new"][1])
    assert losses(new) == pytest.approx(losses(old), abs=1e-5)
    assert losses(new)[-1] < losses(new)[0]
    adapter = new / "final" / "adapters" / "llm" / "adapter_model.safetensors"
    assert adapter.is_file()
    proc = subprocess.run([PY, "-m", "vita.export", str(new), str(tmp_path / "vita"), "--format", "vita"],
                          cwd=ROOT, env=vita_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    back, released = read_all(tmp_path / "vita"), read_all(src)
    assert sorted(back) == sorted(released)
    q = "model.layers.0.self_attn.q_proj.weight"  # LoRA merged: the trained weight, not the released one
    assert not torch.allclose(back[q], released[q], atol=1e-6)
    k = "model.vision_tower.vision_tower.encoder.layers.0.mlp.fc1.weight"  # frozen tower: as released
    assert torch.equal(back[k], released[k])


class _Tokenizer:
    """As much of a tokenizer as the decision reads: its size and vocabulary."""

    def __init__(self, size: int, vocab: dict) -> None:
        self.size, self.vocab = size, vocab

    def __len__(self) -> int:
        return self.size

    def get_vocab(self) -> dict:
        return self.vocab


def test_which_imports_are_built_in_partitions(tmp_path, caplog):
    """ZeRO-3 only, unless stage.init_partitioned=false, and not when the embedding table would have to grow."""
    from hydra import compose, initialize_config_dir

    from vita.config import CONF_DIR, register_configs
    from vita.interop import adopt_vita_config
    from vita.interop.importer import read_tokenizer, zero3_build_config

    register_configs()
    src = make_vita_folder(tmp_path / "release", "vita-Qwen2", seed=1)

    def cfg(*extra):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            c = compose("config", overrides=["experiment=smoke", f"stage.init_from=vita:{src}", *extra])
        adopt_vita_config(c, src)
        return c

    tok = read_tokenizer(src)  # 1024 tokens with the media tokens, 1040 embedding rows
    ds = zero3_build_config(cfg("engine=zero3", "engine.precision=bf16"), src, tok, 2)
    assert ds["zero_optimization"]["stage"] == 3 and ds["bf16"]["enabled"] and ds["train_batch_size"] % 2 == 0
    assert zero3_build_config(cfg("engine=zero2"), src, tok, 2) is None
    assert zero3_build_config(cfg("engine=zero3", "stage.init_partitioned=false"), src, tok, 2) is None
    with caplog.at_level("INFO", logger="vita"):
        assert zero3_build_config(cfg("engine=zero3"), src, _Tokenizer(1039, {}), 2) is None  # +3 media > 1040
    assert "embeddings must grow to 1042 rows" in caplog.text
    assert zero3_build_config(cfg("engine=zero3"), src, _Tokenizer(1037, {}), 2) is not None  # 1040: no growth


_BOTH_WAYS = r"""
import os, sys
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2], RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
import logging
import deepspeed, torch
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
deepspeed.init_distributed("gloo")
import vita.interop.loader as loader
from vita.interop import build_vita_model, compose_from_vita
src = sys.argv[1]
imported, _ = compose_from_vita(src)
ds = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "train_batch_size": 1,
      "zero_optimization": {"stage": 3}}
ref = dict(build_vita_model(imported.model, src, dtype=torch.float32, progress=False).named_parameters())
for way in ("slice", "gathered"):
    if way == "gathered":
        loader.own_slice_in_memory = lambda p: False  # as for NVMe / quantised partitions
    model = build_vita_model(imported.model, src, dtype=torch.float32, progress=False, ds_config=ds)
    params = dict(model.named_parameters())
    with deepspeed.zero.GatheredParameters(list(params.values())):
        bad = [k for k in ref if not torch.equal(ref[k], params[k].detach())]
    print(way, len(params), "differ:", bad[:4], flush=True)
"""


def test_partitioned_fill_both_ways_equals_the_meta_load(tmp_path):
    """Both ways into a partition (own slice, and GatheredParameters where a partition is no plain slice)
    give the meta-device load's tensors bitwise (one rank: the slice is the whole; two ranks: above)."""
    from tests.conftest import _free_port

    src = make_vita_folder(tmp_path / "release", "vita-mixtral", seed=2)  # fused expert tensors too
    proc = subprocess.run([PY, "-c", _BOTH_WAYS, str(src), str(_free_port())], cwd=ROOT, env=vita_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("slice", "gathered"))]
    assert len(lines) == 2 and all(line.endswith("differ: []") for line in lines), proc.stdout[-2000:]
    n = int(lines[0].split()[1])
    counts = [(int(m[3]), int(m[4])) for m in LINE.findall(proc.stdout)]
    assert counts == [(n, 0), (n, n)]  # filled, of them gathered: none the first way, all the second
