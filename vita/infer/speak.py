"""Spoken answers on the one inference path: text answer -> the LLM's hidden states -> speech decoder -> audio.

After :func:`~vita.infer.generate.generate` has produced a batch's text answers, :func:`speak_rows` runs
*one* no-grad LLM forward over each row's prompt + answer tokens (left-padded, the prompt's media spliced by
``model.embed`` as in training), cuts each answer's span (its text tokens, the stop token excluded: the span
training reads) with :func:`vita.model.speech.spans.gather_spans`, and returns one :class:`SpokenAnswer` per
row. Iterating a :class:`SpokenAnswer` runs ``model.speech_decoder.generate(..., chunk=c)`` and feeds its code
chunks to ``model.speech_codec.decode_chunks``: waveform pieces come out as soon as the codec has its first
block (``codec.latency_frames`` code frames), not after the whole answer.

    rows = generate(model, batch, gen, stop, pad_id)
    for spoken in speak_rows(model, batch, rows, pad_id):
        for piece in spoken:          # float32 [samples] at spoken.sample_rate, streamed
            play(piece)
        print(spoken.stats)           # first_chunk_ms, real-time factor ...

``first_chunk_ms`` of a row is the shared forward's time plus the time from the start of that row's speech
generation to its first audio piece (rows of a batch are spoken one after another; a later row does not count
the earlier rows' speech). The real-time factor is the compute seconds (its share of the forward included)
over the seconds of audio produced.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vita.errors import ConfigError
from vita.model.speech.spans import gather_spans


def speech_problem(model) -> str | None:
    """Why ``model`` cannot speak (one line), or None when it has a speech decoder and a codec."""
    if getattr(model, "speech_decoder", None) is None:
        return ("this model has no speech decoder, so it cannot answer aloud; train one with stage 3.2 "
                "(model.speech.decoder, docs/SPEECH.md) or load a run that has one")
    if getattr(model, "speech_codec", None) is None:
        return "this model has a speech decoder but no speech codec (model.speech.codec); it cannot make audio"
    return None


def require_speech(model) -> None:
    """Raise :class:`~vita.errors.ConfigError` with :func:`speech_problem`'s line when ``model`` cannot speak."""
    why = speech_problem(model)
    if why:
        raise ConfigError(why)


@dataclass
class SpeechStats:
    """How one spoken answer went."""

    first_chunk_ms: float | None = None
    """From the end of the text answer to the first audio piece (None: no audio)."""
    frames: int = 0
    """Code frames generated."""
    frames_at_first: int = 0
    """Code frames generated when the first audio piece was yielded."""
    audio_s: float = 0.0
    """Seconds of audio produced."""
    compute_s: float = 0.0
    """Seconds spent making it (the row's share of the forward included)."""

    @property
    def rtf(self) -> float:
        """Real-time factor: compute seconds per second of audio (< 1: faster than real time)."""
        return self.compute_s / self.audio_s if self.audio_s > 0 else float("inf")

    def record(self) -> dict:
        """JSON-safe fields for prediction rows (``None`` where there was no audio)."""
        some = self.audio_s > 0
        return {"speech_seconds": round(self.audio_s, 3),
                "first_chunk_ms": round(self.first_chunk_ms, 1) if self.first_chunk_ms is not None else None,
                "rtf": round(self.rtf, 3) if some else None}

    def line(self) -> str:
        first = f"{self.first_chunk_ms:.0f} ms" if self.first_chunk_ms is not None else "-"
        return f"{self.audio_s:.2f} s of speech, first chunk {first}, RTF {self.rtf:.2f}"


class SpokenAnswer:
    """One row's speech, generated lazily: iterate for waveform pieces (float32 ``[n]`` at :attr:`sample_rate`);
    :meth:`wave` runs it all. Iterate once."""

    def __init__(self, model, hidden: torch.Tensor, embeds: torch.Tensor, forward_s: float, chunk: int,
                 max_frames: int | None) -> None:
        self.decoder, self.codec = model.speech_decoder, model.speech_codec
        self.hidden, self.embeds = hidden, embeds
        self.forward_s, self.chunk, self.max_frames = forward_s, max(1, int(chunk)), max_frames
        self.sample_rate = int(self.codec.sample_rate)
        self.stats = SpeechStats()
        self.codes: list[torch.Tensor] = []
        self._used = False

    def _codes(self) -> Iterator[torch.Tensor]:
        if self.hidden.shape[0] == 0:  # an empty answer says nothing
            return
        with torch.no_grad():
            for c in self.decoder.generate(self.hidden, self.embeds, self.max_frames, self.chunk):
                c = c.detach().to("cpu", torch.long)
                self.codes.append(c)
                self.stats.frames += int(c.shape[0])
                yield c

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self._used:
            raise RuntimeError("a SpokenAnswer streams once; keep its pieces or call wave() the first time")
        self._used = True
        t0 = time.perf_counter()
        spent = self.forward_s
        for piece in self.codec.decode_chunks(self._codes()):
            now = time.perf_counter()
            if self.stats.first_chunk_ms is None:
                self.stats.first_chunk_ms = 1000.0 * (self.forward_s + now - t0)
                self.stats.frames_at_first = self.stats.frames
            piece = piece.detach().float().reshape(-1)
            self.stats.audio_s += piece.numel() / self.sample_rate
            self.stats.compute_s = spent + now - t0
            yield piece
            t0, spent = time.perf_counter(), self.stats.compute_s  # the consumer's time is not ours
        self.stats.compute_s = spent + time.perf_counter() - t0

    def wave(self) -> torch.Tensor:
        """All the pieces, concatenated (float32 ``[samples]``)."""
        return torch.cat([torch.zeros(0), *self])


def answer_batch(batch: dict, rows: Sequence[Sequence[int]], pad_id: int) -> tuple[dict, torch.Tensor]:
    """A left-padded prompt batch and each row's answer ids -> the batch of prompt + answer (left-padded, the
    prompt's media kept) and the answer spans ``[B, 3]`` = ``(row, start, end)`` (the answer's text tokens)."""
    ids, mask = batch["input_ids"].cpu(), batch["attention_mask"].cpu()
    seqs = [ids[b][mask[b].bool()].tolist() + [int(t) for t in rows[b]] for b in range(ids.shape[0])]
    length = max(len(s) for s in seqs)
    new_ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    new_mask = torch.zeros(len(seqs), length, dtype=torch.long)
    spans = torch.zeros(len(seqs), 3, dtype=torch.long)
    for b, s in enumerate(seqs):
        new_ids[b, length - len(s):] = torch.tensor(s, dtype=torch.long)
        new_mask[b, length - len(s):] = 1
        spans[b] = torch.tensor([b, length - len(rows[b]), length])
    out = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    out["input_ids"], out["attention_mask"] = new_ids, new_mask
    return out, spans


@torch.no_grad()
def answer_hidden(model, batch: dict, rows: Sequence[Sequence[int]], pad_id: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One LLM forward over prompt + answer; returns the answers' last hidden states and token embeddings
    (``[B, T, H]`` each, zero-padded) and their lengths ``[B]``, cut by :func:`gather_spans`."""
    full, spans = answer_batch(batch, rows, pad_id)
    param = next(model.parameters())
    dev = param.device
    ids, mask = full["input_ids"].to(dev), full["attention_mask"].to(dev)
    media = {k: full[k].to(dev, param.dtype) if full[k].is_floating_point() else full[k].to(dev)
             for k in ("pixel_values", "audio_features", "audio_lengths") if k in full}
    embeds, _ = model.embed(ids, media.get("pixel_values"), media.get("audio_features"), media.get("audio_lengths"))
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    kw = {"output_router_logits": False} if getattr(model, "is_moe", False) else {}
    out = model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False,
                    output_hidden_states=True, logits_to_keep=1, **kw)
    return gather_spans(out.hidden_states[-1], ids, spans, model.llm.get_input_embeddings())


def speak_rows(model, batch: dict, rows: Sequence[Sequence[int]], pad_id: int, chunk: int = 8,
               max_frames: int | None = None) -> list[SpokenAnswer]:
    """The spoken answers of a generated batch (``batch``: the left-padded prompts given to ``generate``;
    ``rows``: its answers' token ids, stop cut). The forward runs now; each answer's speech when iterated.

    Args:
        chunk: code frames per decoder chunk (smaller: earlier first audio, more decoder calls).
        max_frames: most code frames per answer (default: ``model.speech.max_seconds`` worth, the longest answer
            the decoder was trained to say: an undertrained decoder that never says its end-of-speech code stops
            there, not at the decoder's own limit).

    Raises:
        ConfigError: the model has no speech decoder or codec (one line, :func:`speech_problem`).
    """
    require_speech(model)
    if not rows:
        return []
    if max_frames is None:
        max_frames = getattr(model, "speech_max_frames", 0) or None
    t0 = time.perf_counter()
    hidden, embeds, lengths = answer_hidden(model, batch, rows, pad_id)
    share = (time.perf_counter() - t0) / len(rows)
    return [SpokenAnswer(model, hidden[b, :int(lengths[b])], embeds[b, :int(lengths[b])], share, chunk, max_frames)
            for b in range(len(rows))]


class WavWriter:
    """A mono 16-bit WAV written piece by piece (the file grows as the speech streams)."""

    def __init__(self, path: str | Path, sample_rate: int) -> None:
        import soundfile as sf

        self.path = Path(path)
        self.file = sf.SoundFile(str(self.path), "w", samplerate=int(sample_rate), channels=1, subtype="PCM_16",
                                 format="WAV")

    def write(self, piece: torch.Tensor) -> None:
        self.file.write(piece.detach().float().clamp(-1, 1).numpy())
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def write_speech(spoken: SpokenAnswer, path: str | Path) -> SpeechStats:
    """Stream ``spoken`` into the WAV file ``path``; returns its stats."""
    w = WavWriter(path, spoken.sample_rate)
    try:
        for piece in spoken:
            w.write(piece)
    finally:
        w.close()
    return spoken.stats


def wav_path_problem(path: str | Path, folder: bool = False) -> str | None:
    """One line saying why speech cannot be written at ``path`` (a ``.wav`` file, or with ``folder`` a folder
    that may not exist yet), or None."""
    p = Path(path).expanduser()
    if folder:
        if p.exists() and not p.is_dir():
            return f"{p}: exists and is not a folder; give a folder for the WAV files"
        parent = p if p.is_dir() else p.parent
    else:
        if p.is_dir():
            return f"{p}: is a folder; give a file name such as {p / 'answer.wav'}"
        if p.suffix.lower() != ".wav":
            return f"{p}: speech is written as WAV; give a path ending in .wav"
        parent = p.parent
    if not parent.is_dir():
        return f"{p}: the folder {parent} does not exist; create it or give another path"
    import os

    if not os.access(parent, os.W_OK):
        return f"{p}: the folder {parent} is not writable; give another path"
    return None
