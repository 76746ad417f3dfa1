"""Stage 3.1 (``stage.task=codec``, vita/codec_stage.py): the codec fitted on the demo's real flite answers
round-trips held-out answers with a lower ASR word error rate than the unfitted codec of the same shape; the
codec folder it writes is the one stage 3.2 loads; a codec that comes ready is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import find_run, quiet, run_vita
from tests.data_fixtures import demo_root

pytestmark = pytest.mark.slow


def test_stage_3_1_fits_a_codec_that_beats_the_unfitted_one_on_held_out_speech(tmp_path):
    demo_root()  # the spoken-answer set (flite) and its annotations
    run_vita(["experiment=smol_omni_codec", "data.eval.spoken_heldout.limit=4", *quiet("codec", tmp_path)],
             timeout=900)
    run = find_run(tmp_path, "codec")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    before, after = rows[0]["eval/spoken_heldout/codec_wer"], rows[-1]["eval/spoken_heldout/codec_wer"]
    assert (rows[0]["step"], rows[-1]["step"]) == (0, 1)
    assert after < before and after < 0.5, (before, after)  # unfitted random codebooks: WER near 1
    assert rows[-1]["speech_answers"] == 40
    from vita.data.speak import flite_speech
    from vita.registry import SPEECH_CODECS, load_builtins

    load_builtins()
    codec = SPEECH_CODECS.build("mel_rvq", path=str(run / "final" / "codec"))
    wave, rate = flite_speech("seven of hearts", "slt")
    codes = codec.encode(torch.from_numpy(wave), rate)
    assert codes.shape[1] == 4 and int(codes.max()) < 256
    assert (run / "COMPLETE.json").is_file()


def test_stage_3_1_refuses_a_codec_that_comes_ready(tmp_path):
    p = run_vita(["experiment=smol_omni_codec", "model.speech.codec=codec2", "model.speech.codec_options={}",
                  *quiet("c2", tmp_path)], check=False, timeout=600)
    assert p.returncode != 0
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "comes ready" in lines[0] and "stage 3.2" in lines[0], p.stderr[-2000:]
    assert "Traceback" not in p.stderr


def test_a_recipe_hands_the_fitted_codec_to_stage_3_2(tmp_path):
    """A codec step exports no model: the next step starts from what came before it and speaks with the codec it
    fitted (``model.speech.codec_path`` left empty is filled with ``<k>_<name>/final/codec``)."""
    demo_root()
    steps = ("recipe=[{stage: stage3_1_codec, name: codec}, {stage: stage3_2_speech_decoder, name: speak, "
             "overrides: ['stage.init_required=null']}]")
    run_vita(["experiment=tiny_omni_recipe", "data=demo_spoken_answers", "~data.eval.spoken_heldout", "model.speech.codec=mel_rvq",
              "++model.speech.codec_options={codebooks: 2, codebook_size: 16}", "model.speech.decoder=nar_ar-tiny",
              steps, *quiet("rec", tmp_path)], timeout=900)
    root = tmp_path / "rec"
    run = next(p for p in root.rglob("1_codec") if p.is_dir()).parent
    codec = run / "1_codec" / "final" / "codec"
    assert (codec / "config.json").is_file()
    from vita import artefacts

    final = run / "2_speak" / "final"
    _, spoken = artefacts.read_speech(final)
    assert spoken["codec"] == "mel_rvq" and (final / artefacts.SPEECH_DECODER_WEIGHTS).is_file()
    fitted = json.loads((codec / "config.json").read_text())
    assert (fitted["codebooks"], fitted["codebook_size"]) == (2, 16)
    assert json.loads((Path(spoken["codec_path"]) / "config.json").read_text()) == fitted  # the step's codec
    cfg = json.loads((run / "2_speak" / artefacts.CONFIG_FILE).read_text())
    assert cfg["model"]["speech"]["codec_path"] == str(codec)
