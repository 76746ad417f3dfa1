"""The omni demo: smol_omni (real SmolLM2-135M-Instruct + real Whisper tiny.en) learns audio alignment on real speech.

Only the audio adapter trains (VITA-1.5 stage 2.1); the LLM and Whisper stay frozen, so a lower
WER after training than before proves that the audio reaches the LLM through the trained adapter.
Before training the untrained adapter hands SmolLM2 noise and it answers with chat ("The speech
is: ..."); the figures come from the in-loop evaluation (``train.eval_at_start`` + ``eval_every``),
the same generation path as ``vita.chat`` and ``vita.eval``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import find_run, losses, quiet, run_vita
from tests.data_fixtures import demo_root


def _cards(root: Path, out: Path) -> Path:
    """The card-call clips of the demo's training split (short clips: a fast, real ASR task)."""
    rows = [ln for ln in (root / "annotations" / "speech_train.jsonl").read_text().splitlines()
            if json.loads(ln)["id"].startswith("asr-cards-")][:3]
    assert len(rows) == 3, rows
    out.write_text("\n".join(rows) + "\n")
    return out


def _eval_rows(run_dir: Path) -> dict[int, dict]:
    from vita.engine.metrics import read_metrics

    return {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl") if "eval/speech_train/wer" in r}


@pytest.mark.timeout(1800)  # ~100 s of CPU (98 s measured); a shared machine stretches the wall time
def test_audio_alignment_on_real_speech_lowers_loss_and_wer(tmp_path, out_root):
    """A short smol_omni stage-2.1 run on the demo's real card-call clips: the eval loss and the WER on the
    clips it trained on fall (before = step 0, after = the last step)."""
    root = demo_root()
    cards = _cards(root, tmp_path / "cards.jsonl")
    steps = 10
    run_vita([*quiet("align", out_root), "experiment=smol_omni_stage2", "logging.plot=false",
              f"data.datasets=[{{name:cards,annotations:[{cards}],audio_root:{root / 'speech'}}}]",
              f"data.eval.speech_train.annotations=[{cards}]", "data.eval.speech_train.max_new_tokens=16",
              "~data.eval.speech_heldout", "~data.eval.images", "engine.micro_batch_size=3", "optim.warmup_steps=2",
              "optim.scheduler=constant",
              f"train.max_steps={steps}", f"train.eval_every={steps}", "stage.export=trainable"], timeout=1700)
    run_dir = find_run(out_root, "align")
    ev = _eval_rows(run_dir)
    assert sorted(ev) == [0, steps], sorted(ev)
    before, after = ev[0], ev[steps]
    assert after["eval/speech_train/loss"] < before["eval/speech_train/loss"] - 0.5, (before, after)
    assert after["eval/speech_train/wer"] < before["eval/speech_train/wer"], (before, after)
    traj = losses(run_dir)
    assert len(traj) == steps and sum(traj[-3:]) / 3 < traj[0], traj
    # only the adapter was trained and exported (stage 2.1 exports what it trains)
    assert sorted(p.name for p in (run_dir / "final").glob("*.safetensors")) == ["audio_projector.safetensors"]


def test_embedded_default_is_the_omni_demo():
    """`python -m vita.run` with no arguments = the demo: smol_omni, stage 2.1 on the real speech, eval before/after."""
    from tests.test_config import _compose

    cfg = _compose([])
    assert cfg.model.backbone == "smollm2-135m" and cfg.model.audio.encoder == "whisper"
    assert cfg.stage.name == "stage2_1_audio_align" and cfg.data.name == "demo_speech"
    assert set(cfg.data.eval) == {"speech_heldout", "speech_train", "images"}
    assert cfg.train.eval_at_start and cfg.train.eval_every == cfg.train.max_steps


def test_compare_prints_first_and_last_eval(tmp_path):
    """vita.eval.compare (the end of make demo): one line per set and metric, first eval row against the last."""
    from vita.errors import VitaError
    from vita.eval.compare import compare_table

    rows = [{"step": 0, "eval/speech/wer": 2.5, "eval/speech/ppl": 9.0, "eval/img/loss": 4.0},
            {"step": 1, "loss": 3.0}, {"step": 4, "loss": 1.0, "eval/speech/wer": 0.5, "eval/img/loss": 4.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = compare_table(tmp_path).splitlines()
    assert "step 0" in lines[0] and "step 4" in lines[0] and len(lines) == 3  # ppl left out
    assert lines[1].split() == ["img", "loss", "4", "4", "+0"]
    assert lines[2].split() == ["speech", "wer", "2.5", "0.5", "-2"]
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 3.0}) + "\n")
    with pytest.raises(VitaError, match="no eval rows"):
        compare_table(tmp_path)
