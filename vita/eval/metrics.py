"""Evaluation metrics: a registry of ``(predictions, references) -> float`` functions.

Generation metrics compare the decoded answer with the reference answer (the last assistant
turn of a sample), after :func:`normalize` (lower case, punctuation removed, spaces collapsed):

* ``wer`` / ``cer``: corpus word / character error rate (jiwer): edits over all samples divided
  by the reference words / characters of all samples;
* ``exact``: share of answers equal to the reference;
* ``contains``: share of answers that contain the reference (as whole words);
* ``choice``: share of answers whose multiple-choice letter (``B``, ``(B)``, ``B.``, ``Answer: B``)
  is the reference's letter.

``loss`` and ``ppl`` (exp of the token-mean loss on the supervised tokens) come from the forward
pass, not from generation; every eval set reports them.

Speech metrics (a model with a speech decoder; the answers are spoken by :mod:`vita.infer.speak` and
transcribed by the set's ASR, :func:`vita.eval.asr.load_asr`, default Whisper tiny.en):

* ``asr_wer`` / ``asr_cer``: corpus word / character error rate of the transcripts of the generated speech
  against the generated answer *text* (how intelligibly the model says what it wrote);
* ``first_chunk_ms``: mean milliseconds from the end of the text answer to the first audio piece.

Each metric reads two fields of a prediction row (:data:`INPUTS`): text metrics ``prediction`` against
``reference``, ``asr_*`` ``transcript`` against ``prediction``, ``first_chunk_ms`` the row's own value.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from vita.registry import Registry

METRICS = Registry("eval metric")
"""Generation metrics: name -> ``fn(predictions, references) -> float``."""
LOSS_METRICS = ("loss", "ppl")
SPEECH_METRICS = ("asr_wer", "asr_cer", "first_chunk_ms")
"""Metrics that need the answers spoken (``vita.infer.speak``)."""
LOWER_IS_BETTER = {"loss", "ppl", "wer", "cer", "speech_loss", *SPEECH_METRICS}
INPUTS = {"asr_wer": ("transcript", "prediction"), "asr_cer": ("transcript", "prediction"),
          "first_chunk_ms": ("first_chunk_ms", None)}
"""metric -> (the row field it scores, the row field it compares with); default ``(prediction, reference)``."""


def normalize(text: str) -> str:
    """Lower case, punctuation (any Unicode P* character) and symbols dropped, whitespace collapsed."""
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text.lower())
    return " ".join(text.split())


def _edits(refs: list[str], preds: list[str], chars: bool, empty: float | None = None) -> float:
    import jiwer

    r = [normalize(x) for x in refs]
    p = [normalize(x) for x in preds]
    total = sum(len(x) if chars else len(x.split()) for x in r)
    if total == 0:
        if empty is not None:
            return empty
        raise ValueError("every reference is empty after normalisation; wer/cer need reference text")
    keep = [i for i, x in enumerate(r) if x]
    errors = sum(len(p[i]) if chars else len(p[i].split()) for i, x in enumerate(r) if not x)  # all insertions
    if keep:
        fn = jiwer.process_characters if chars else jiwer.process_words
        o = fn([r[i] for i in keep], [p[i] or "" for i in keep])
        errors += o.substitutions + o.deletions + o.insertions
    return errors / total


@METRICS.register("wer")
def wer(preds: list[str], refs: list[str]) -> float:
    """Corpus word error rate (normalised text)."""
    return _edits(refs, preds, chars=False)


@METRICS.register("cer")
def cer(preds: list[str], refs: list[str]) -> float:
    """Corpus character error rate (normalised text, spaces count)."""
    return _edits(refs, preds, chars=True)


@METRICS.register("asr_wer")
def asr_wer(transcripts: list[str], answers: list[str]) -> float:
    """Corpus word error rate of the spoken answers' ASR transcripts against the answer texts (NaN when every
    answer is empty: a model that says nothing has no word to get right)."""
    return _edits(answers, transcripts, chars=False, empty=float("nan"))


@METRICS.register("asr_cer")
def asr_cer(transcripts: list[str], answers: list[str]) -> float:
    """Corpus character error rate of the spoken answers' ASR transcripts against the answer texts (NaN when
    every answer is empty)."""
    return _edits(answers, transcripts, chars=True, empty=float("nan"))


@METRICS.register("first_chunk_ms")
def first_chunk_ms(values: list[float | None], _unused: list | None = None) -> float:
    """Mean first-audio latency (ms) over the spoken answers (answers without audio are left out)."""
    got = [float(v) for v in values if v is not None]
    return sum(got) / len(got) if got else float("nan")


def _mean(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


@METRICS.register("exact")
def exact(preds: list[str], refs: list[str]) -> float:
    """Share of answers equal to the reference (normalised)."""
    return _mean([normalize(p) == normalize(r) for p, r in zip(preds, refs, strict=True)])


@METRICS.register("contains")
def contains(preds: list[str], refs: list[str]) -> float:
    """Share of answers that contain the reference as whole words (normalised)."""
    return _mean([f" {normalize(r)} " in f" {normalize(p)} " for p, r in zip(preds, refs, strict=True)])


_CHOICE = [re.compile(p) for p in (
    r"(?i)\banswer\s*(?:is|:)?\s*\(?([A-Z])\b\)?",  # "The answer is (B)", "Answer: B"
    r"^\s*\(([A-Z])\)",  # "(B) ..."
    r"^\s*([A-Z])(?:[.):]|\s*$)",  # "B", "B.", "B) ...", "B: ..."
)]


def choice_letter(text: str) -> str | None:
    """The multiple-choice letter an answer gives, or None."""
    for pat in _CHOICE:
        m = pat.search(text)
        if m:
            return m.group(1).upper()
    return None


@METRICS.register("choice")
def choice(preds: list[str], refs: list[str]) -> float:
    """Share of answers whose choice letter equals the reference's (an answer without a letter is wrong)."""
    out = []
    for p, r in zip(preds, refs, strict=True):
        want = choice_letter(r)
        if want is None:
            raise ValueError(f"reference {r!r} has no choice letter (write it as 'B', '(B)' or 'B. text')")
        out.append(choice_letter(p) == want)
    return _mean(out)


def metric(name: str) -> Callable[[list[str], list[str]], float]:
    """The generation metric ``name``; an unknown name lists the known ones (and ``loss``, ``ppl``)."""
    return METRICS.get(name)


def parse_metrics(spec) -> list[str]:
    """``"wer,loss"`` or ``["wer", "loss"]`` -> ``["wer", "loss"]``, each checked (a typo lists the known metrics)."""
    parts = spec if isinstance(spec, (list, tuple)) or hasattr(spec, "__iter__") and not isinstance(spec, str) \
        else str(spec).split(",")
    names = [str(m).strip() for m in parts if str(m).strip()]
    for n in names:
        if n not in LOSS_METRICS:
            try:
                METRICS.get(n)
            except KeyError as e:
                raise type(e)(f"{e} (and {', '.join(LOSS_METRICS)})") from None
    return names


def better(name: str, new: float, old: float | None) -> bool:
    """Whether ``new`` beats ``old`` for metric ``name`` (``old`` None: always)."""
    if old is None:
        return True
    return new < old if name in LOWER_IS_BETTER else new > old


def speaks(names: list[str]) -> bool:
    """Whether any of ``names`` needs the answers spoken."""
    return any(n in SPEECH_METRICS for n in names)


def compute(names: list[str], preds: list[str], refs: list[str]) -> dict[str, float]:
    """The text generation metrics ``names`` of ``preds`` against ``refs`` (loss and speech metrics are skipped)."""
    return {n: float(METRICS.get(n)(preds, refs)) for n in names if n not in LOSS_METRICS and n not in SPEECH_METRICS}


def compute_rows(names: list[str], rows: list[dict]) -> dict[str, float]:
    """The generation metrics ``names`` of prediction rows (``prediction``, ``reference``, and for speech metrics
    ``transcript`` and ``first_chunk_ms``); each metric reads the fields :data:`INPUTS` names."""
    out = {}
    for n in names:
        if n in LOSS_METRICS:
            continue
        a, b = INPUTS.get(n, ("prediction", "reference"))
        if any(a not in r for r in rows):
            raise ValueError(f"metric {n} needs the field {a!r} in every prediction row (speech metrics: score the "
                             "model with them, so that its answers are spoken and transcribed)")
        first = [r[a] for r in rows]
        second = [r.get(b) or "" for r in rows] if b else None
        out[n] = float(METRICS.get(n)(first, second))
    return out
