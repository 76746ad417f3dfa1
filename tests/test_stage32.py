"""Stage 3.2 (VITA-1.5's speech decoder) on the real engine: the frozen parts stay bitwise, the decoder learns,
two ZeRO-3 ranks (one without a spoken answer) follow the one-rank trajectory, and a kill -9 resumes exactly.

The data are real: a few answers spoken by Debian flite, a ``mel_rvq`` codec fitted on them
(tests/speech_answers.py); the model is the tiny omni model (tiny Qwen2 + tiny towers) with ``nar_ar-tiny``.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ROOT, TORCHRUN, _free_port, find_run, losses, quiet, run_vita, vita_env
from tests.speech_answers import data_overrides, speech_overrides, write_answers
from vita import artefacts

ANSWERS = ["Yes, I can.", "Good morning to you.", "The cat is black.", "It is raining."]
CODEC = {"n_mels": 40, "codebooks": 2, "codebook_size": 32}
STEPS = 30
STAGE32 = ["stage=stage3_2_speech_decoder", "optim.lr=3e-3", "optim.warmup_steps=3", "engine.micro_batch_size=2",
           f"train.max_steps={STEPS}", "train.ckpt_every=4", "train.keep_last=2"]


ARGS: dict[Path, list[str]] = {}
"""The overrides each module-scoped run was started with."""


def _speech_metrics(run_dir: Path) -> list[dict]:
    from vita.engine.metrics import read_metrics

    return [r for r in read_metrics(run_dir / "metrics.jsonl") if "speech_loss" in r]


@pytest.fixture(scope="module")
def answers(tmp_path_factory) -> dict:
    """Four flite answers (the first without its speech: a text-only sample) and a codec fitted on them."""
    return write_answers(tmp_path_factory.mktemp("answers"), ANSWERS, text_only=1, codec_options=CODEC)


@pytest.fixture(scope="module")
def stage2(tmp_path_factory) -> Path:
    """The model stage 3.2 starts from: a short text run of the tiny omni model, exported (its ``final/``)."""
    root = tmp_path_factory.mktemp("s2") / "outputs"
    run_vita([*quiet("s2", root), "experiment=smoke", "model=tiny_omni", "train.max_steps=2", "train.ckpt_every=0"])
    return artefacts.final_of(find_run(root, "s2"))


def stage32_args(answers: dict, stage2: Path, root: Path, name: str) -> list[str]:
    # the run dir named here: one named after the overrides would hold data.datasets' brackets, which DeepSpeed's
    # checkpoint loader reads as a glob pattern
    return [*quiet(name, root), f"hydra.run.dir={root / name / 'run'}", "experiment=smoke", "model=tiny_omni",
            *data_overrides(answers), *speech_overrides(answers), *STAGE32, f"stage.init_from={stage2}",
            f"+data.eval={{answers: {{annotations: ['{answers['jsonl']}'], audio_root: '{answers['audio_root']}', "
            "metric: loss}}", "train.eval_at_start=true", f"train.eval_every={STEPS}"]


@pytest.fixture(scope="module")
def straight(answers, stage2, tmp_path_factory) -> Path:
    """The uninterrupted stage 3.2 run (its run dir)."""
    root = tmp_path_factory.mktemp("s32") / "outputs"
    args = stage32_args(answers, stage2, root, "s32")
    run_vita(args)
    run_dir = find_run(root, "s32")
    ARGS[run_dir] = args
    return run_dir


@pytest.mark.slow
def test_stage32_trains_the_decoder_alone(straight, stage2):
    """The LLM, encoders and projectors leave stage 3.2 bitwise as stage 2 exported them; the decoder moved, its
    loss fell, and the export carries the decoder and the codec (vita.infer.load speaks with them)."""
    final = artefacts.final_of(straight)
    before = load_file(str(stage2 / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    groups = ("vision_tower", "vision_projector", "audio_encoder", "audio_projector")
    for g in groups:
        a, b = load_file(str(stage2 / f"{g}.safetensors")), load_file(str(final / f"{g}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), g

    from vita.infer.load import load_target

    trained = load_file(str(final / artefacts.SPEECH_DECODER_WEIGHTS))
    first = load_target(None, ARGS[straight]).model.speech_decoder.state_dict()  # as the run built it, untrained
    assert trained.keys() == first.keys()
    assert any(not torch.equal(trained[k], first[k]) for k in trained)
    rows = _speech_metrics(straight)
    assert len(rows) == STEPS and all(r["speech_frames"] > 0 for r in rows)
    assert sum(r["speech_loss"] for r in rows[-4:]) < sum(r["speech_loss"] for r in rows[:4]) - 1.0, rows
    from vita.engine.metrics import read_metrics

    evals = [r["eval/answers/speech_loss"] for r in read_metrics(straight / "metrics.jsonl")
             if "eval/answers/speech_loss" in r]  # in-loop eval: before the first step and after the last
    assert len(evals) == 2 and evals[1] < evals[0] - 1.0, evals

    decoder, codec = artefacts.read_speech(final)
    assert decoder["decoder"] == "nar_ar-tiny" and decoder["codebooks"] == CODEC["codebooks"]
    assert codec["codec"] == "mel_rvq" and Path(codec["codec_path"]) == final / artefacts.SPEECH_CODEC_DIR
    loaded = load_target(str(final))
    sd = loaded.model.speech_decoder.state_dict()
    assert all(torch.equal(sd[k], trained[k]) for k in trained)
    assert loaded.model.speech_codec.codebooks == CODEC["codebooks"]
    assert loaded.cfg.model.speech.codec_path == str(final / artefacts.SPEECH_CODEC_DIR)
    from_run = load_target(str(straight))  # the run dir: its last checkpoint, with the codec the run dir carries
    assert from_run.cfg.model.speech.codec_path == str(straight / artefacts.SPEECH_CODEC_DIR)
    sd = from_run.model.speech_decoder.state_dict()
    assert all(torch.equal(sd[k], trained[k]) for k in trained)


@pytest.mark.slow
def test_stage32_kill_9_and_resume_is_bit_identical(straight, answers, stage2, tmp_path):
    """SIGKILL the same stage 3.2 run at a random step after a checkpoint; the restart resumes and ends with the
    straight run's weights (decoder and frozen parts) bit for bit, and its losses."""
    from tests.test_train_resume import _kill_at

    root = tmp_path / "outputs"
    args = stage32_args(answers, stage2, root, "killed")
    kill_step = random.Random().randint(5, STEPS - 8)
    killed_at, _ = _kill_at(args, root, "killed", kill_step)
    run_dir = find_run(root, "killed")
    assert not (run_dir / artefacts.COMPLETE_FILE).exists()
    proc = run_vita(args)
    assert "resumed from" in proc.stdout + proc.stderr, f"did not resume after the kill at step {killed_at}"
    a_dir, b_dir = artefacts.final_of(straight), artefacts.final_of(run_dir)
    for f in ("model.safetensors", artefacts.SPEECH_DECODER_WEIGHTS, "audio_projector.safetensors"):
        a, b = load_file(str(a_dir / f)), load_file(str(b_dir / f))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{f} differs (kill at {killed_at})"
    assert losses(run_dir) == losses(straight)
    assert [r["speech_loss"] for r in _speech_metrics(run_dir)] == [r["speech_loss"] for r in _speech_metrics(straight)]


@pytest.mark.slow
@pytest.mark.distributed
def test_stage32_zero3_two_ranks_one_without_speech_matches_one_rank(tmp_path_factory):
    """Two samples, one spoken answer and one text-only: at world 2 (ZeRO-3, gloo, micro-batch 1) every step one
    rank holds no spoken answer and runs the decoder on its dummy; no hang, and the losses equal world 1's (the
    same global batch as 2 accumulated micro-batches) within 1e-5, the speech loss normalised by global frames."""
    base = tmp_path_factory.mktemp("z3")
    pair = write_answers(base / "pair", ANSWERS[:2], text_only=1, codec_options=CODEC)
    root = base / "outputs"
    common = ["experiment=smoke", "model=tiny_qwen2", *data_overrides(pair), *speech_overrides(pair), *STAGE32,
              "stage.init_required=null", "train.max_steps=8", "train.ckpt_every=0", "engine=zero3",
              "engine.stage3_param_persistence_threshold=0", "engine.micro_batch_size=1"]
    # negative control: the decoder's dummy alone (no LLM embedding on the rank without an answer) breaks ZeRO-3
    cmd = [TORCHRUN, "--nproc_per_node", "2", "--master_port", str(_free_port()), "tests/dist_stage32_nodummy.py",
           *quiet("nodummy", root), f"hydra.run.dir={root / 'nodummy' / 'run'}", *common, "engine.grad_accum=1"]
    proc = subprocess.run(cmd, cwd=ROOT, env=vita_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode != 0 and "world size 2" in proc.stdout and "run complete:" not in proc.stdout, proc.stderr[-3000:]
    assert any(s in proc.stderr for s in ("collective mismatch", "Connection reset", "Timed out")), proc.stderr[-3000:]
    runs = {}
    for world, accum in ((1, 2), (2, 1)):
        name = f"w{world}"
        run_vita([*quiet(name, root), f"hydra.run.dir={root / name / 'run'}", *common, f"engine.grad_accum={accum}"],
                 world=world)
        runs[world] = _speech_metrics(find_run(root, name))
    one, two = runs[1], runs[2]
    assert len(one) == len(two) == 8
    for a, b in zip(one, two):
        assert a["speech_frames"] == b["speech_frames"] > 0  # the one spoken answer, every step
        assert abs(a["speech_loss"] - b["speech_loss"]) < 1e-5 and abs(a["loss"] - b["loss"]) < 1e-5, (a, b)
    assert one[-1]["speech_loss"] < one[0]["speech_loss"]


def _speech_model(**speech):
    from omegaconf import OmegaConf

    from vita.config import ModelConfig
    from vita.model import build_model

    cfg = OmegaConf.structured(ModelConfig(backbone="tiny-qwen2"))
    for k, v in speech.items():
        cfg.speech[k] = v
    return build_model(cfg, vocab_size=1024)


def test_speech_config_errors_are_one_line():
    """A decoder without a codec (or a codec without a decoder), and answers longer than the decoder takes."""
    from vita.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.speech.decoder='nar_ar-tiny' needs model.speech.codec too"):
        _speech_model(decoder="nar_ar-tiny")
    with pytest.raises(ConfigError, match=r"model.speech.codec='mel_rvq-tiny' needs model.speech.decoder too"):
        _speech_model(codec="mel_rvq-tiny")
    with pytest.raises(ConfigError, match=r"max_seconds=30.0 is 7500 code frames .* more than the speech decoder "
                                          r"'nar_ar-tiny' takes \(\d+\)"):
        _speech_model(codec="mel_rvq-tiny", decoder="nar_ar-tiny")
    model = _speech_model(codec="mel_rvq-tiny", decoder="nar_ar-tiny", max_seconds=1.0)
    spec = model.data_spec()
    assert spec.speech_codec == ("mel_rvq-tiny", None, ()) and spec.speech_max_frames == 250
    assert "speech_decoder" in model.module_groups() and model.speech_decoder.codebooks == model.speech_codec.codebooks
    assert not any(k.startswith("speech_codec") for k in model.state_dict())


def test_stage3_speech_qwen_trains_the_vita15_decoder_alone():
    """VITA-1.5's sizes (experiment=stage3_speech_qwen, built on the meta device): stage 3.2 trains the vita15
    decoder alone, over one 1,024-entry codebook at 40 Hz, 30 s = 1,200 frames per answer at most."""
    from hydra import compose, initialize_config_dir

    from vita.config import CONF_DIR, register_configs, register_resolvers
    from vita.model.builder import build_model
    from vita.stage import apply_stage

    register_configs()
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=stage3_speech_qwen", "model.pretrained=null",
                                           "model.vision.pretrained=null", "model.audio.pretrained=null"])
    with torch.device("meta"):
        model = build_model(cfg.model)
    assert apply_stage(model, cfg.stage, cfg.optim.lr) == {"speech_decoder": 5e-4}
    trains = {g: sum(p.numel() for p in m.parameters() if p.requires_grad) for g, m in model.module_groups().items()}
    assert [g for g, n in trains.items() if n] == ["speech_decoder"] and trains["speech_decoder"] > 100e6, trains
    spec = model.data_spec()
    assert (model.speech_codec.frame_rate, model.speech_codec.codebooks, model.speech_codec.codebook_size) == (40, 1, 1024)
    assert spec.speech_codec[0] == "mel_rvq" and spec.speech_max_frames == 1200
