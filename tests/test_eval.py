"""Evaluation: metrics on hand-computed cases, eval sets, in-loop eval, ZeRO-3 with unequal shards,
and ``python -m vita.eval`` predictions that re-score to the same figures (issue 12, acceptance 4-5)."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import find_run, quiet, read_json, run_vita
from tests.data_fixtures import demo_root
from vita.errors import ConfigError
from vita.eval.metrics import METRICS, better, choice_letter, compute, normalize, parse_metrics
from vita.eval.sets import eval_override


# -- metrics ----------------------------------------------------------------------------------------
def test_wer_cer_hand_computed():
    """WER: 1 substitution in 6 words; corpus WER sums edits over samples; CER counts characters with spaces."""
    refs = ["The cat sat on the mat.", "Hello world"]
    preds = ["the cat sat on a mat", "hello, big world!"]
    assert METRICS.get("wer")(preds[:1], refs[:1]) == pytest.approx(1 / 6)
    assert METRICS.get("wer")(preds, refs) == pytest.approx((1 + 1) / (6 + 2))  # 1 sub + 1 insertion over 8 words
    # "the cat sat on the mat" (22 chars) -> "the cat sat on a mat": t->a, delete h, e = 3 edits
    assert METRICS.get("cer")(preds[:1], refs[:1]) == pytest.approx(3 / 22)
    assert METRICS.get("wer")(["", "x"], ["a b", ""]) == pytest.approx((2 + 1) / 2)  # empty ref: insertions count
    assert METRICS.get("wer")(refs, refs) == 0.0


def test_exact_contains_choice_hand_computed():
    preds = ["Paris.", "It is Paris, France", "paris", "Parisian"]
    refs = ["paris"] * 4
    assert METRICS.get("exact")(preds, refs) == pytest.approx(2 / 4)  # "Paris." and "paris"
    assert METRICS.get("contains")(preds, refs) == pytest.approx(3 / 4)  # whole words: not "Parisian"
    assert [choice_letter(t) for t in ["B", "(C) a dog", "D. blue", "The answer is (A).", "Answer: b", "A cat"]] == \
        ["B", "C", "D", "A", "B", None]
    assert METRICS.get("choice")(["B", "(C) a dog", "A cat", "The answer is D"], ["B", "C. dog", "A", "(B)"]) == \
        pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="no choice letter"):
        METRICS.get("choice")(["B"], ["blue"])
    assert normalize("  Hello,   WORLD!! ") == "hello world"


def test_metric_registry_and_direction():
    with pytest.raises(ConfigError, match="Did you mean 'wer'.*loss, ppl"):
        parse_metrics("wre")
    assert parse_metrics(["wer", "loss"]) == parse_metrics("wer,loss") == ["wer", "loss"]
    assert better("wer", 0.1, 0.2) and not better("exact", 0.1, 0.2) and better("loss", 1.0, None)
    assert compute(["loss", "exact"], ["a"], ["a"]) == {"exact": 1.0}


# -- eval sets --------------------------------------------------------------------------------------
def _eval_sets(root, speech_metric="[wer,cer]", speech_bs=1, limit=3, img_bs=2) -> str:
    return eval_override({
        "speech": {"annotations": [root / "annotations" / "speech.jsonl"], "audio_root": root / "speech",
                   "metric": speech_metric, "limit": limit, "max_new_tokens": 4, "batch_size": speech_bs},
        "img": {"annotations": [root / "annotations" / "images.jsonl"], "image_root": root / "images",
                "limit": limit, "batch_size": img_bs}})


def _train_args(name, out_root, *extra) -> list[str]:
    return ["experiment=chatterbot_tiny", "model=tiny_omni", "data=demo", *quiet(name, out_root), "engine.micro_batch_size=2",
            "train.max_steps=4", "train.log_every=1", *extra]


SPEECH_METRICS = ("wer", "cer", "exact", "contains")


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory):
    """One 4-step run with in-loop eval (at start, every 3 steps, at the end), checkpoints every step pruned to
    keep_last=1 + the best: the in-loop test reads its rows, the vita.eval test evaluates its newest checkpoint."""
    out_root = tmp_path_factory.mktemp("evloop") / "outputs"
    root = demo_root()
    sets = _eval_sets(root, speech_metric=f"[{','.join(SPEECH_METRICS)}]", speech_bs=2)
    run_vita(_train_args("evloop", out_root, sets, "train.eval_every=3", "train.eval_at_start=true",
                         "train.ckpt_every=1", "train.keep_last=1", "train.keep_best=img/loss",
                         "logging.plot=true"))  # the eval panel beside the loss
    return find_run(out_root, "evloop")


def test_in_loop_eval_logs_at_the_configured_steps_and_keeps_best(eval_run):
    """eval_at_start + eval_every=3 over 4 steps: eval/* rows at 0, 3, 4 in metrics.jsonl and on the plot;
    keep_best survives keep_last=1 pruning."""
    run = eval_run
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    eval_steps = [r["step"] for r in rows if "eval/speech/wer" in r]
    assert eval_steps == [0, 3, 4]  # at start, every 3 steps, and the last step
    keys = {k for r in rows for k in r if k.startswith("eval/")}
    assert keys == {f"eval/{s}/{m}" for s in ("speech", "img") for m in ("loss", "ppl")} | {
        f"eval/speech/{m}" for m in SPEECH_METRICS}
    img = {r["step"]: r["eval/img/loss"] for r in rows if "eval/img/loss" in r}
    best = read_json(run / "checkpoints" / "best.json")
    want = min((s for s in img if s > 0), key=lambda s: img[s])
    assert best["step"] == want and best["value"] == pytest.approx(img[want])
    tags = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    assert (run / "checkpoints" / "best").read_text() in tags and f"step_{4:08d}" in tags and len(tags) <= 2
    assert (run / "loss.png").is_file()


def test_broken_eval_set_fails_at_start(out_root, tmp_path):
    """A missing audio file in an eval set stops the run before step 1, naming the set, record and file."""
    root = demo_root()
    bad = tmp_path / "bad.jsonl"
    rec = json.loads((root / "annotations" / "speech.jsonl").read_text().splitlines()[0])
    rec["audio"] = "librivox/missing.wav"
    bad.write_text(json.dumps(rec) + "\n")
    sets = eval_override({"asr": {"annotations": [bad], "audio_root": root / "speech", "metric": "wer"}})
    proc = run_vita(_train_args("evbad", out_root, sets, "train.eval_every=2"), check=False)
    assert proc.returncode == 2
    assert "eval set 'asr'" in proc.stderr and "missing.wav" in proc.stderr
    assert "step 1 " not in proc.stdout + proc.stderr
    proc = run_vita(_train_args("evbad2", out_root, "train.keep_best=asr/wer"), check=False)
    assert proc.returncode == 2 and "train.keep_best" in proc.stderr


@pytest.mark.distributed
def test_zero3_two_ranks_unequal_shards_equal_world_one(out_root):
    """3 records over 2 ranks (2 + 1; the rank left without data steps on dummies, in the loss pass and in
    lockstep generation): ZeRO-3 eval finishes and gives the world-1 figures. One record per batch, so
    that the only difference is the order of the sums (batches padded differently differ by ~1e-8)."""
    root = demo_root()
    args = [_eval_sets(root, speech_bs=1, img_bs=1), "train.eval_at_start=true", "train.max_steps=1", "engine=zero3",
            "engine.micro_batch_size=1"]
    run_vita(_train_args("z3w2", out_root, *args), world=2, timeout=900)
    run_vita(_train_args("z3w1", out_root, *args), world=1, timeout=900)
    figs = []
    for name in ("z3w2", "z3w1"):
        rows = [json.loads(x) for x in (find_run(out_root, name) / "metrics.jsonl").read_text().splitlines()]
        figs.append(next(r for r in rows if r["step"] == 0))
    two, one = figs
    keys = [k for k in one if k.startswith("eval/")]
    assert len(keys) == 6 and set(keys) == {k for k in two if k.startswith("eval/")}
    for k in keys:
        assert math.isfinite(one[k]) and two[k] == pytest.approx(one[k], rel=1e-9), k


# -- python -m vita.eval ----------------------------------------------------------------------------
def test_vita_eval_on_a_trained_run_writes_files(eval_run, tmp_path):
    """vita.eval on a run dir (its newest checkpoint, step 4): predictions.jsonl + metrics.json, and they
    re-score to the same figures; the loss equals the in-loop eval of the same checkpoint."""
    from vita.eval.__main__ import main, score_predictions

    run = eval_run
    out = tmp_path / "ev"
    assert main([str(run), "--output", str(out)]) == 0  # the run's own data.eval sets
    metrics = read_json(out / "metrics.json")["metrics"]
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["index"] for p in preds if p["set"] == "speech"] == [0, 1, 2]
    again = score_predictions(out / "predictions.jsonl", "wer,cer,exact,contains")["speech"]
    for m in ("wer", "cer", "exact", "contains"):
        assert again[m] == metrics["speech"][m]
    assert again["samples"] == 3
    rescored = tmp_path / "rescored"  # --score with --output: the scores are written there, samples counted
    assert main(["--score", str(out / "predictions.jsonl"), "--metric", "wer", "--output", str(rescored)]) == 0
    written = read_json(rescored / "metrics.json")["metrics"]["speech"]
    assert written["samples"] == 3 and written["wer"] == metrics["speech"]["wer"]
    in_loop = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    last = next(r for r in in_loop if r["step"] == 4 and "eval/img/loss" in r)
    assert metrics["img"]["loss"] == pytest.approx(last["eval/img/loss"], rel=1e-6)
    assert metrics["speech"]["loss"] == pytest.approx(last["eval/speech/loss"], rel=1e-6)
