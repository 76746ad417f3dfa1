"""What every speech codec offers, and the one blockwise decoder that makes streamed decode equal whole decode.

A codec turns a mono waveform into integer codes ``[frames, codebooks]`` (each in
``[0, codebook_size)``, ``frame_rate`` frames per second) and back into a waveform at
``sample_rate``. ``samples_per_frame = sample_rate / frame_rate`` samples come out per frame.

**Streaming, and why chunked decode equals whole decode.** Every codec decodes in fixed *blocks*
of ``block`` frames laid on a grid that starts at frame 0 (block k covers frames
``[k*block, (k+1)*block)``). A block is decoded from a *span* of codes: ``left`` frames of
context before it and ``right`` frames of look-ahead after it (fewer at the ends of the
utterance); only the samples of the block's own frames are kept. Neighbouring blocks are joined
by a linear cross-fade of ``crossfade`` samples just before the block start (the earlier block
withholds its last ``crossfade`` samples until the next block is decoded). A codec may carry a
*state* from one block to the next (the mel codec carries its Griffin-Lim phases; codec2 its
decoder). ``decode(codes)`` is this same procedure run over all codes at once, so feeding the
codes in chunks of any size (:meth:`SpeechCodec.stream_decoder`, :meth:`SpeechCodec.decode_chunks`)
gives the same samples as ``decode`` (equal up to float rounding, tested at 1e-5): the overlap is
"accounted for" by construction. A block can be emitted once ``right`` frames after it are known,
so the first audio comes after ``block + right`` frames (``latency_frames``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from vita.errors import ConfigError


class SpeechCodec(ABC):
    """A speech codec: ``encode(wave, rate) -> codes [frames, codebooks]``, ``decode(codes) -> wave``."""

    name: str = "codec"
    sample_rate: int
    """Rate of the decoded waveform (and of what the encoder reads, after resampling)."""
    frame_rate: float
    """Code frames per second."""
    codebooks: int
    """Codes per frame (the second axis of the codes)."""
    codebook_size: int
    """Every code lies in ``[0, codebook_size)``."""
    block: int = 1
    left: int = 0
    right: int = 0
    crossfade: int = 0

    @property
    def samples_per_frame(self) -> int:
        return int(round(self.sample_rate / self.frame_rate))

    @property
    def latency_frames(self) -> int:
        """Code frames needed before the first audio block can be decoded."""
        return self.block + self.right

    @abstractmethod
    def encode(self, wave: torch.Tensor, rate: int) -> torch.Tensor:
        """``wave`` (float [samples], mono, any ``rate``) -> LongTensor ``[frames, codebooks]``."""

    @abstractmethod
    def decode_span(self, codes: torch.Tensor, start: int, state: Any) -> tuple[torch.Tensor, Any]:
        """Decode the span of ``codes`` (``[n, codebooks]``, whose first frame is frame ``start`` of the
        utterance) to exactly ``n * samples_per_frame`` samples; return them and the state for the next block."""

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """The waveform of ``codes`` (float [frames * samples_per_frame]) at ``sample_rate``."""
        return torch.cat(list(self.decode_chunks([codes])) or [torch.zeros(0)])

    def decode_chunks(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Decode codes arriving in chunks (each ``[n, codebooks]``); yields waveform pieces as soon as
        they are final. Their concatenation equals :meth:`decode` of all codes."""
        stream = self.stream_decoder()
        for chunk in chunks:
            out = stream.push(chunk)
            if out.numel():
                yield out
        out = stream.finish()
        if out.numel():
            yield out

    def stream_decoder(self) -> BlockStream:
        """A fresh streaming decoder: ``push(codes) -> samples``, then ``finish() -> samples``."""
        return BlockStream(self)

    def check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes`` as a LongTensor ``[frames, codebooks]``, or a one-line error saying what is wrong."""
        codes = torch.as_tensor(codes)
        if codes.dim() != 2 or codes.shape[1] != self.codebooks:
            raise ConfigError(f"speech codec {self.name}: codes must be [frames, {self.codebooks}], got "
                              f"{list(codes.shape)}")
        if codes.dtype.is_floating_point:
            raise ConfigError(f"speech codec {self.name}: codes must be integers, got {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ConfigError(f"speech codec {self.name}: codes must lie in [0, {self.codebook_size}), got "
                              f"[{int(codes.min())}, {int(codes.max())}]")
        return codes.long()

    def check_wave(self, wave: torch.Tensor, rate: int) -> torch.Tensor:
        wave = torch.as_tensor(wave, dtype=torch.float32)
        if wave.dim() != 1:
            raise ConfigError(f"speech codec {self.name}: expects a mono waveform [samples], got {list(wave.shape)} "
                              "(average the channels first)")
        if rate <= 0:
            raise ConfigError(f"speech codec {self.name}: sample rate must be positive, got {rate}")
        if not torch.isfinite(wave).all():
            raise ConfigError(f"speech codec {self.name}: the waveform holds NaN or inf samples")
        return wave


class BlockStream:
    """Incremental blockwise decoding of one utterance (see the module docstring)."""

    def __init__(self, codec: SpeechCodec, span: Callable[[torch.Tensor, int, Any], tuple[torch.Tensor, Any]] | None = None
                 ) -> None:
        """``span``: what decodes one span (default ``codec.decode_span``; the mel codec passes its Griffin-Lim
        to decode unquantised log-mel frames on the same blocks)."""
        self.codec = codec
        self.span = span or codec.decode_span
        self.codes: list[torch.Tensor] = []
        self.known = 0  # frames received
        self.next_block = 0  # first frame of the next block to decode
        self.state: Any = None
        self.tail = torch.zeros(0)  # samples withheld for the cross-fade

    def _all(self) -> torch.Tensor:
        if len(self.codes) > 1:
            self.codes = [torch.cat(self.codes)]
        return self.codes[0] if self.codes else torch.zeros(0, self.codec.codebooks, dtype=torch.long)

    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """Add code frames; return the samples that are now final (possibly none)."""
        codes = self.codec.check_codes(codes) if self.span == self.codec.decode_span else codes
        self.codes.append(codes)
        self.known += codes.shape[0]
        out = []
        c = self.codec
        while self.next_block + c.block + c.right <= self.known:
            out.append(self._decode_block(self.next_block + c.block))
        return torch.cat(out) if out else torch.zeros(0)

    def finish(self) -> torch.Tensor:
        """Decode what is left (the last blocks, with whatever look-ahead there is) and flush the cross-fade tail."""
        out = []
        while self.next_block < self.known:
            out.append(self._decode_block(min(self.next_block + self.codec.block, self.known)))
        out.append(self.tail)
        self.tail = torch.zeros(0)
        return torch.cat(out)

    def _decode_block(self, end: int) -> torch.Tensor:
        c, h = self.codec, self.codec.samples_per_frame
        a = self.next_block
        s, e = max(0, a - c.left), min(self.known, end + c.right)
        wave, self.state = self.span(self._all()[s:e], s, self.state)
        wave = wave.float().reshape(-1)
        if wave.numel() != (e - s) * h:
            raise RuntimeError(f"speech codec {c.name}: decode_span gave {wave.numel()} samples for {e - s} frames "
                               f"(expected {(e - s) * h})")
        x = min(self.tail.numel(), (a - s) * h)  # cross-fade over the withheld tail (none before block 0)
        piece = wave[(a - s) * h - x:(end - s) * h]
        if x:
            w = torch.arange(1, x + 1, dtype=piece.dtype) / (x + 1)
            piece = torch.cat([self.tail[-x:] * (1 - w) + piece[:x] * w, piece[x:]])
        piece = torch.cat([self.tail[:self.tail.numel() - x], piece])  # the part of the tail no context overlaps
        keep = min(c.crossfade, piece.numel())
        self.tail = piece[piece.numel() - keep:]
        self.next_block = end
        return piece[:piece.numel() - keep]
