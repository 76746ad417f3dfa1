"""Concurrent requests share forward passes: a bounded queue and one generation thread.

The thread waits for a first job, then ``window_s`` for more (up to ``max_batch``), and runs the
jobs that can share a :class:`~vita.infer.generate.GenerationConfig` (all greedy ones; sampling ones
with the same temperature and top_p; a seeded one alone, so that its seed repeats) as one left-padded
batch through :func:`vita.infer.generate.generate` — the infer path of ``vita.chat`` and evaluation.
The window grows while requests keep arriving (up to four windows), so that clients
answered by one batch join the next. Rows end at the template's stop, at their own ``max_tokens`` or ``stop`` text, or when their client
leaves (``Job.cancel``); a full queue refuses new jobs with 503 and a Retry-After estimate.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from vita.infer import GenerationConfig, collate_prompts, decode, generate
from vita.infer.answer import TextStream
from vita.infer.load import Loaded
from vita.serve.errors import ApiError
from vita.serve.request import ChatRequest
from vita.serve.speech import Speaker

log = logging.getLogger("vita.serve")


@dataclass
class Result:
    """A finished answer."""

    text: str
    ids: list[int]
    finish_reason: str
    """``stop`` (end of turn or a stop text), ``length`` (``max_tokens``) or ``cancelled``."""
    prompt_tokens: int
    completion_tokens: int
    prompt_ids: list[int]
    """The prompt's tokens (media placeholders included), as the model saw them."""
    audio: dict | None = None
    """``message.audio`` of a spoken answer that was not streamed (:mod:`vita.serve.speech`)."""


class Job:
    """One request in the queue: its prompt item, settings, and a thread-safe ``emit`` for its events
    (``("delta", text)``, ``("done", Result)``, ``("error", ApiError)``)."""

    def __init__(self, item: dict, req: ChatRequest, emit: Callable[[tuple], None]) -> None:
        self.item, self.req, self.emit = item, req, emit
        self.cancelled = threading.Event()
        self.why = ""
        self.stopped_at: int | None = None
        """Tokens used when a ``stop`` text appeared."""
        self.sent = ""
        """The text streamed so far."""
        self.stream: TextStream | None = None

    def cancel(self, why: str) -> None:
        """Stop this job (queued: dropped; running: its row ends at its next token)."""
        self.why = why
        self.cancelled.set()

    @property
    def key(self) -> tuple:
        """Jobs with equal keys can share a batch."""
        r = self.req
        if r.temperature <= 0:
            return ("greedy",)
        if r.seed is not None:
            return ("seeded", id(self))
        return ("sample", r.temperature, r.top_p)

    # -- called on the generation thread -------------------------------------------------------------
    def on_token(self, tok: int) -> None:
        if self.stopped_at is not None:
            return
        self.stream.add(tok)
        full = self.stream.shown
        cut = _first_stop(full, self.req.stop)
        if cut is not None:
            self.stopped_at = len(self.stream.ids)
            safe = full[:cut]
        else:
            safe = full[:len(full) - _held(full, self.req.stop)]
        if len(safe) > len(self.sent) and safe.startswith(self.sent):
            self.emit(("delta", safe[len(self.sent):]))
            self.sent = safe

    def row_done(self, tokens: list[int]) -> bool:
        return len(tokens) >= self.req.max_tokens or self.stopped_at is not None or self.cancelled.is_set()

    def finish(self, loaded: Loaded, ids: list[int]) -> Result:
        text = decode(loaded, ids)
        cut = _first_stop(text, self.req.stop)
        if self.cancelled.is_set():
            reason = "cancelled"
        elif cut is not None or self.stopped_at is not None:
            reason = "stop"
        else:
            reason = "length" if len(ids) >= self.req.max_tokens else "stop"
        if cut is not None:
            text = text[:cut]
        n = self.stopped_at if self.stopped_at is not None else len(ids)
        if text.startswith(self.sent) and len(text) > len(self.sent):
            self.emit(("delta", text[len(self.sent):]))
        prompt = self.item["input_ids"]
        prompt = [int(t) for t in (prompt.tolist() if hasattr(prompt, "tolist") else prompt)]
        return Result(text, ids[:n], reason, len(prompt), n, prompt)


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _held(text: str, stops: list[str]) -> int:
    """Length of the longest end of ``text`` that could begin a stop text (not shown yet)."""
    return max((k for s in stops for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])),
               default=0)


class Batcher:
    """The queue and the generation thread of one loaded model.

    Args:
        loaded: the model (:func:`vita.infer.load_target`).
        max_batch: most rows per forward pass.
        window_s: how long a batch waits for one more job (four times at most).
        max_queue: most jobs waiting; one more is refused with 503.
    """

    def __init__(self, loaded: Loaded, max_batch: int = 16, window_s: float = 0.05, max_queue: int = 64,
                 speaker: Speaker | None = None) -> None:
        # generation decodes with its own tokenizer copy: a fast tokenizer used from two threads at once can fail
        self.loaded = dataclasses.replace(loaded, tokenizer=copy.deepcopy(loaded.tokenizer))
        self.max_batch, self.window_s, self.max_queue = max(1, max_batch), window_s, max_queue
        self.speaker = speaker
        """Speaks the answers of requests for audio (``vita.serve.speech``; None: the model cannot)."""
        self.jobs: deque[Job] = deque()
        self.cv = threading.Condition()
        self.closed = False
        self.last_arrival = 0.0
        self.running = 0
        self.current: list[Job] = []
        """The jobs of the batch being generated."""
        self.stats = {"served": 0, "cancelled": 0, "failed": 0, "batches": 0, "largest_batch": 0}
        self.batch_s = 1.0
        """Running mean of a batch's seconds (for Retry-After)."""
        self.thread = threading.Thread(target=self._loop, name="vita-serve-generate", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises 503 ``server_busy`` (with Retry-After) when the queue is full."""
        with self.cv:
            if self.closed:
                raise ApiError("server_busy", "the server is shutting down; retry on another server",
                               headers={"Retry-After": "5"})
            if len(self.jobs) >= self.max_queue:
                wait = max(1, math.ceil(len(self.jobs) / self.max_batch * self.batch_s))
                raise ApiError("server_busy", f"the queue is full ({self.max_queue} requests waiting, --max-queue); "
                               f"retry in {wait} s", headers={"Retry-After": str(wait)})
            self.jobs.append(job)
            self.last_arrival = time.monotonic()
            self.cv.notify()

    def status(self) -> dict:
        with self.cv:
            return {"queued": len(self.jobs), "running": self.running, **self.stats}

    def close(self) -> None:
        with self.cv:
            self.closed = True
            for job in self.jobs:
                job.emit(("error", ApiError("server_busy", "the server is shutting down; retry on another server",
                                            headers={"Retry-After": "5"})))
            self.jobs.clear()
            for job in self.current:
                job.cancel("the server is shutting down")
            self.cv.notify_all()
        self.thread.join(timeout=30)

    # -- the generation thread -----------------------------------------------------------------------
    def _take(self) -> list[Job]:
        with self.cv:
            while not self.jobs and not self.closed:
                self.cv.wait()
            # wait while requests keep coming (each within window_s of the last), at most 4 windows: clients
            # answered by the last batch are sending their next requests now
            start = time.monotonic()
            while len(self.jobs) < self.max_batch and not self.closed:
                now = time.monotonic()
                left = min(max(start, self.last_arrival) + self.window_s, start + 4 * self.window_s) - now
                if left <= 0:
                    break
                self.cv.wait(left)
            for job in [j for j in self.jobs if j.cancelled.is_set()]:
                self.jobs.remove(job)
                self.stats["cancelled"] += 1
                log.info("request dropped before it started (%s)", job.why)
            if not self.jobs:
                return []
            key = self.jobs[0].key
            picked = [j for j in self.jobs if j.key == key][:self.max_batch]
            for job in picked:
                self.jobs.remove(job)
            self.running, self.current = len(picked), picked
            return picked

    def _loop(self) -> None:
        while not self.closed:
            jobs = self._take()
            if jobs:
                try:
                    self._run(jobs)
                finally:
                    with self.cv:
                        self.running, self.current = 0, []

    def _run(self, jobs: list[Job]) -> None:
        loaded = self.loaded
        r0 = jobs[0].req
        gen = GenerationConfig(max_new_tokens=max(j.req.max_tokens for j in jobs), temperature=r0.temperature,
                               top_p=r0.top_p, seed=r0.seed)
        for job in jobs:
            job.stream = TextStream(loaded.tokenizer)
        t0 = time.perf_counter()
        try:
            batch = collate_prompts([j.item for j in jobs], loaded.pad_id)
            rows = generate(loaded.model, batch, gen, loaded.stop, loaded.pad_id,
                            on_token=lambda b, tok: jobs[b].on_token(tok),
                            stop_row=lambda b, toks: jobs[b].row_done(toks))
        except Exception as e:  # noqa: BLE001  (a bug: these requests fail, the server goes on)
            log.exception("generation failed for a batch of %d", len(jobs))
            with self.cv:
                self.stats["failed"] += len(jobs)
            for job in jobs:
                job.emit(("error", ApiError("internal_error", f"generation failed ({type(e).__name__}: {e}); this is "
                                            "a bug in vita.serve, please report it")))
            return
        dt = time.perf_counter() - t0
        with self.cv:
            self.batch_s = 0.8 * self.batch_s + 0.2 * dt
            self.stats["batches"] += 1
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(jobs))
        log.info("batch of %d: %d tokens in %.2f s", len(jobs), sum(map(len, rows)), dt)
        results = [job.finish(loaded, ids) for job, ids in zip(jobs, rows, strict=True)]
        talk = [k for k, (job, res) in enumerate(zip(jobs, results))
                if job.req.want_audio and res.finish_reason != "cancelled" and self.speaker is not None]
        for k, (job, res) in enumerate(zip(jobs, results)):
            if k not in talk:
                self._done(job, res)
        if talk:
            self._speak([jobs[k] for k in talk], [results[k] for k in talk])

    def _done(self, job: Job, res: Result) -> None:
        with self.cv:
            self.stats["cancelled" if res.finish_reason == "cancelled" else "served"] += 1
        if res.finish_reason == "cancelled":
            log.info("request stopped after %d tokens (%s)", res.completion_tokens, job.why)
        job.emit(("done", res))

    def _speak(self, jobs: list[Job], results: list[Result]) -> None:
        """The spoken answers of ``jobs`` (one forward for them all, then each one's speech, streamed or whole)."""
        t0 = time.perf_counter()
        try:
            spoken = self.speaker.speak([j.item for j in jobs], [r.ids for r in results])
            for job, res, sp in zip(jobs, results, spoken, strict=True):
                res.audio = self.speaker.stream(sp, res.text, job.emit, job.req.stream, job.cancelled.is_set)
                if job.cancelled.is_set():
                    res.finish_reason = "cancelled"
                self._done(job, res)
        except Exception as e:  # noqa: BLE001  (a bug: these requests fail, the server goes on)
            log.exception("speech failed for a batch of %d", len(jobs))
            with self.cv:
                self.stats["failed"] += len(jobs)
            for job in jobs:
                job.emit(("error", ApiError("internal_error", f"speech generation failed ({type(e).__name__}: {e}); "
                                            "this is a bug in vita.serve, please report it")))
            return
        log.info("spoke %d answers in %.2f s", len(jobs), time.perf_counter() - t0)
