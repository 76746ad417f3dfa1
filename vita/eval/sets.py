"""Eval sets: named VITA-format files whose last assistant turn is the reference answer.

Every record is checked when the set is loaded (files, markers, encoders, token lengths, a
reference to compare with), so an eval set that cannot run fails before training starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vita.data.schema import AnnotationFile, BadSample
from vita.errors import DataError
from vita.eval.metrics import parse_metrics
from vita.infer.prompt import split_answer


@dataclass
class EvalSet:
    """Records of one eval set and how to score them."""

    name: str
    records: list[tuple[dict, str, dict]]
    """(raw record, its location, media roots)."""
    metrics: list[str]
    max_new_tokens: int = 64
    batch_size: int = 4
    asr: str | None = None
    """The ASR of the speech metrics (:func:`vita.eval.asr.load_asr`; None = Whisper tiny.en)."""

    @property
    def generates(self) -> bool:
        """Whether a metric needs generated answers (anything besides loss / ppl)."""
        return any(m not in ("loss", "ppl") for m in self.metrics)

    def __len__(self) -> int:
        return len(self.records)


def roots_of(es_cfg, name: str) -> dict[str, Path | None]:
    roots = {}
    for m in ("image", "video", "audio"):
        r = getattr(es_cfg, f"{m}_root", None)
        if r is not None and not Path(r).is_dir():
            raise DataError(f"eval set '{name}': {m}_root {r} is not a folder; fix data.eval.{name}.{m}_root")
        roots[m] = Path(r) if r else None
    return roots


def load_eval_set(name: str, es_cfg, processor, require_answer: bool = True, check: bool = True) -> EvalSet:
    """Read and check the eval set ``data.eval.<name>`` (an :class:`~vita.config.EvalSetConfig`).

    Args:
        processor: the model's training :class:`~vita.data.dataset.Processor`.
        require_answer: every record must end with an assistant turn (the reference).
        check: validate every record now (files, markers, encoders, lengths).

    Raises:
        DataError: naming the set, the record and the fix.
    """
    roots = roots_of(es_cfg, name)
    records: list[tuple[dict, str, dict]] = []
    for path in es_cfg.annotations:
        f = AnnotationFile(path)
        for i in range(len(f)):
            if es_cfg.limit and len(records) >= es_cfg.limit:
                break
            records.append((f.read(i), f.where(i), roots))
    if not records:
        raise DataError(f"eval set '{name}': no records in {', '.join(map(str, es_cfg.annotations))}")
    if check:
        for raw, where, r in records:
            try:
                prompt, answer = split_answer(raw) if isinstance(raw, dict) else (raw, None)
                if answer is None and require_answer:
                    raise BadSample("no reference", where, str(raw.get("id", where)) if isinstance(raw, dict) else None,
                                    "the last turn must be the assistant's reference answer")
                processor.parse(prompt, where, r, prompt_only=True)
                if answer is not None:
                    processor.measure(raw, where, r)
            except BadSample as e:
                raise DataError(f"eval set '{name}': {e}") from None
    return EvalSet(name, records, parse_metrics(es_cfg.metric), es_cfg.max_new_tokens, es_cfg.batch_size,
                   es_cfg.get("asr") if hasattr(es_cfg, "get") else getattr(es_cfg, "asr", None))


def check_speech(sets: list[EvalSet], model) -> None:
    """A set asking for speech metrics of a model that cannot speak: one line naming the set and the fix."""
    from vita.eval.metrics import SPEECH_METRICS, speaks
    from vita.infer.speak import speech_problem

    for es in sets:
        why = speech_problem(model) if speaks(es.metrics) else None
        if why:
            asked = ", ".join(m for m in es.metrics if m in SPEECH_METRICS)
            raise DataError(f"eval set '{es.name}' asks for {asked}, but {why}; drop those metrics from "
                            f"data.eval.{es.name}.metric or give the model a speech decoder")


def load_eval_sets(data_cfg, processor) -> list[EvalSet]:
    """Every set of ``data.eval``, in config order."""
    return [load_eval_set(str(name), es, processor) for name, es in (data_cfg.get("eval") or {}).items()]


def eval_override(sets: dict[str, dict]) -> str:
    """A Hydra override adding eval sets: ``{"speech": {"annotations": [f], "metric": "wer"}}`` ->
    ``+data.eval={speech:{annotations:[f],metric:wer}}`` (paths must hold no ``,{}[]:``)."""

    def val(v) -> str:
        return "[" + ",".join(map(str, v)) + "]" if isinstance(v, (list, tuple)) else str(v)

    body = ",".join(f"{n}:{{" + ",".join(f"{k}:{val(v)}" for k, v in kv.items()) + "}" for n, kv in sets.items())
    return "+data.eval={" + body + "}"
