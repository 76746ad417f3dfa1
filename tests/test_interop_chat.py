"""A released-VITA-layout folder as a ``vita.infer`` / ``vita.chat`` target (issue 13, Build 4).

The tiny folder is the one of ``tests/interop_fixtures.py`` (VITA's config fields and key names, two
shards + index). ``load_target`` must detect it as a VITA folder (not a plain HF folder: it has a
``config.json`` too), build the same model as :func:`vita.interop.load_vita` and use VITA's template.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, cut_at_stop, greedy_ids, vita_env
from tests.interop_fixtures import make_vita_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_vita_folder(tmp_path_factory.mktemp("vita_chat"), "vita-Qwen2", seed=3)


def test_load_target_detects_a_vita_folder_and_matches_load_vita(folder):
    from vita.infer import load_target
    from vita.interop import load_vita

    got = load_target(folder)
    assert got.kind == "vita"
    assert got.cfg.data.template == "qwen2.5"  # VITA-1.5's template, not the config default
    ref = load_vita(folder, dtype="float32", progress=False).model
    ids = torch.tensor([[5, 17, 99, 240, 7, 1000]])
    with torch.no_grad():
        a = got.model.llm(input_ids=ids).logits
        b = ref.llm(input_ids=ids).logits
    assert torch.equal(a, b)
    # the media parts are the folder's too, not a fresh initialisation
    for (ka, va), (kb, vb) in zip(sorted(got.model.state_dict().items()), sorted(ref.state_dict().items())):
        assert ka == kb and torch.equal(va, vb), ka


def test_vita_chat_one_shot_on_a_vita_folder(folder):
    proc = subprocess.run([sys.executable, "-m", "vita.chat", str(folder), "--prompt", "hello there",
                           "--max-new-tokens", "4", "--json"], cwd=ROOT, env=vita_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    from vita.infer import load_target
    from vita.interop import load_vita

    want = greedy_ids(load_vita(folder, dtype="float32", progress=False).model.llm, line["prompt_ids"], 4)
    assert line["ids"] == cut_at_stop(want, load_target(str(folder), []).stop)  # the folder's weights answered
