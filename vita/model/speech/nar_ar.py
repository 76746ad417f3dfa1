"""``nar_ar``: VITA-1.5's speech decoder — a non-autoregressive (NAR) decoder, then an autoregressive (AR) one.

Structure (the shape of VITA-1.5 / Freeze-Omni's public inference code, ``models/decoder/decoder.py``
``LLM2TTSCodecAR`` in ``VITA-MLLM/Freeze-Omni``; written for vita, see :mod:`vita.interop.speech_decoder`):

1. **Input**: the answer's LLM hidden states ``h`` and token embeddings ``e`` (``[T, llm_hidden]`` each) become
   ``in_embed(e) + in_hidden(h)`` (two linear maps to the decoder width ``hidden``). ``input="split"`` instead
   cuts every ``llm_hidden`` vector into ``llm_hidden / hidden`` positions of width ``hidden`` (what
   Freeze-Omni does: a 3,584-wide Qwen2-7B vector becomes 4 positions of 896), with no parameters;
   ``use_hidden=False`` reads the token embeddings only (VITA-1.5's inference).
2. **NAR decoder** (``nar_layers`` LLaMA layers, bidirectional over the answer): a global view of the answer.
3. **AR decoder** (``ar_layers`` LLaMA layers): one sequence ``[BOS, NAR output..., SOS, frame 1, frame 2 ...]``;
   the NAR part attends to itself (bidirectionally), every speech step attends to the whole NAR part and
   causally to the earlier steps. Rotary positions count from the sequence start; the AR state at a step
   predicts the next code frame through ``out_fnn``. Generation keeps a KV cache (prefill once, then one
   frame per step) and is greedy.
4. **Optional KV prefix** (``prefix_layers = ar_layers``; Freeze-Omni's ``layers_prefix``): a second NAR stack over
   the LLM hidden states; the keys and values each of its layers computes from its input are put in front of
   the same-index AR layer's own (the AR layer attends to them, positions counted from 0 in both). Its last
   layer keeps only what gives keys and values (nobody reads its output). Off (0) in every registry entry.

**Multi-codebook codes: per-codebook heads.** All ``K`` codes of a frame come from one AR state: ``out_fnn`` maps
it to ``K x V + 4`` logits (codebook k owns columns ``k V .. (k+1) V - 1``); the next step's input is the *sum*
of the ``K`` code embeddings (``embedding`` row ``k V + code``). No delay pattern: one step per frame.

**Stop: an end-of-speech code.** Four special rows/columns follow the codes (``BOS``, ``SOS``, ``EOS``, ``PAD`` =
``K V + 0..3``, as Freeze-Omni's ``vocab_size + 0..3``). Codebook 0's softmax runs over its ``V`` codes plus
the 4 specials, and the step after the last frame is trained to give ``EOS``; generation stops there (or at
``max_frames``). With ``K = 1`` this is exactly Freeze-Omni's output layer.

**Loss**: summed cross entropy, codebook k weighted by ``codebook_weights[k]`` (the ``EOS`` step counts in
codebook 0), over the valid frames only; padding of the text or the codes does not change a sample's loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vita.errors import ConfigError
from vita.model.speech.blocks import KV, Block, KeysValuesOnly, RMSNorm, bidirectional_mask, padding_mask, rope
from vita.model.speech.decoder import SpeechDecoder, checked_config

SPECIALS = 4
BOS, SOS, EOS, PAD = range(SPECIALS)


@dataclass
class NarArConfig:
    """Shape of a :class:`NarArDecoder` (``cfg.model.speech.decoder_overrides`` sets any field but the first three)."""

    llm_hidden: int
    codebooks: int
    codebook_size: int
    hidden: int = 256
    """Decoder width."""
    heads: int = 4
    intermediate: int = 768
    """SwiGLU inner width."""
    nar_layers: int = 2
    ar_layers: int = 4
    max_frames: int = 4096
    """Most code frames one answer may have (generation stops there)."""
    input: str = "linear"
    """``linear`` (two projections) or ``split`` (Freeze-Omni's reshape; ``llm_hidden`` a multiple of ``hidden``)."""
    use_hidden: bool = True
    """Read the LLM hidden states (else the token embeddings only)."""
    prefix_layers: int = 0
    """Freeze-Omni's KV-prefix NAR over the hidden states (0 = none, else ``ar_layers``)."""
    rope_theta: float = 10000.0
    rms_eps: float = 1e-6


def make_config(llm_hidden: int, codebooks: int, codebook_size: int, **overrides) -> NarArConfig:
    """A checked :class:`NarArConfig`; an unknown key or a bad shape is one clear line."""
    cfg = checked_config(NarArConfig, "nar_ar", llm_hidden, codebooks, codebook_size, overrides)
    if cfg.input not in ("linear", "split"):
        raise ConfigError(f"nar_ar speech decoder: input={cfg.input!r}; use 'linear' or 'split'")
    if cfg.input == "split" and cfg.llm_hidden % cfg.hidden:
        raise ConfigError(f"nar_ar speech decoder: input='split' needs llm_hidden ({cfg.llm_hidden}) to be a multiple "
                          f"of hidden ({cfg.hidden}); use input='linear'")
    if cfg.hidden % cfg.heads:
        raise ConfigError(f"nar_ar speech decoder: hidden {cfg.hidden} is not a multiple of heads {cfg.heads}")
    if cfg.prefix_layers not in (0, cfg.ar_layers):
        raise ConfigError(f"nar_ar speech decoder: prefix_layers={cfg.prefix_layers}; use 0 or ar_layers "
                          f"({cfg.ar_layers}): each AR layer reads the keys/values of one prefix layer")
    if min(cfg.codebooks, cfg.codebook_size, cfg.ar_layers) < 1 or cfg.nar_layers < 0:
        raise ConfigError(f"nar_ar speech decoder: bad shape {asdict(cfg)}")
    return cfg


class NarArDecoder(SpeechDecoder):
    """NAR + AR speech decoder (see the module docstring); ``config`` is its :class:`NarArConfig` as a dict."""

    def __init__(self, cfg: NarArConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.config = asdict(cfg)
        self.codebooks, self.codebook_size, self.max_frames = cfg.codebooks, cfg.codebook_size, cfg.max_frames
        d, kv = cfg.hidden, cfg.codebooks * cfg.codebook_size
        self.special = kv
        if cfg.input == "linear":
            self.in_embed = nn.Linear(cfg.llm_hidden, d)
            self.in_hidden = nn.Linear(cfg.llm_hidden, d) if cfg.use_hidden else None
        self.nar_layers = nn.ModuleList(Block(d, cfg.heads, cfg.intermediate, cfg.rms_eps) for _ in range(cfg.nar_layers))
        self.embedding = nn.Embedding(kv + SPECIALS, d)
        self.layers = nn.ModuleList(Block(d, cfg.heads, cfg.intermediate, cfg.rms_eps) for _ in range(cfg.ar_layers))
        self.norm = RMSNorm(d, cfg.rms_eps)
        self.out_fnn = nn.Linear(d, kv + SPECIALS)
        if cfg.prefix_layers:
            if cfg.input == "linear":
                self.in_prefix = nn.Linear(cfg.llm_hidden, d)
            self.layers_prefix = nn.ModuleList([*(Block(d, cfg.heads, cfg.intermediate, cfg.rms_eps)
                                                  for _ in range(cfg.prefix_layers - 1)),
                                                KeysValuesOnly(d, cfg.heads, cfg.rms_eps)])

    def part_sizes(self) -> dict[str, int]:
        """Parameters of the NAR part (input projections, NAR and prefix layers) and of the AR part (the rest)."""
        nar = {id(p) for m in (getattr(self, "in_embed", None), getattr(self, "in_hidden", None), self.nar_layers,
                               getattr(self, "in_prefix", None), getattr(self, "layers_prefix", None))
               if m is not None for p in m.parameters()}
        sizes = {"nar": 0, "ar": 0}
        for p in self.parameters():
            sizes["nar" if id(p) in nar else "ar"] += p.numel()
        return sizes

    # -- pieces shared by forward and generate -------------------------------------------------------------
    def _pos(self, positions: torch.Tensor, dtype: torch.dtype) -> KV:
        return rope(positions, self.cfg.hidden // self.cfg.heads, self.cfg.rope_theta, dtype)

    def _condition(self, hidden: torch.Tensor, embeds: torch.Tensor,
                   lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs -> NAR output ``[N, T', hidden]`` and its lengths (``T' = T`` or ``T x llm_hidden / hidden``)."""
        cfg = self.cfg
        dtype = self.embedding.weight.dtype
        hidden, embeds = hidden.to(dtype), embeds.to(dtype)
        if cfg.input == "split":
            r = cfg.llm_hidden // cfg.hidden
            n, t, _ = embeds.shape
            x = embeds.reshape(n, t * r, cfg.hidden)
            if cfg.use_hidden:
                x = x + hidden.reshape(n, t * r, cfg.hidden)
            lengths = lengths * r
        else:
            x = self.in_embed(embeds)
            if self.in_hidden is not None:
                x = x + self.in_hidden(hidden)
        t = x.shape[1]
        x = x * padding_mask(lengths, t).unsqueeze(-1).to(x.dtype)
        if self.nar_layers:
            pos = self._pos(torch.arange(t, device=x.device).unsqueeze(0), x.dtype)
            mask = bidirectional_mask(lengths, t)
            for layer in self.nar_layers:
                x, _ = layer(x, pos, mask)
        return x, lengths

    def _prefix(self, hidden: torch.Tensor, lengths: torch.Tensor) -> tuple[list[KV | None], torch.Tensor | None]:
        """Per AR layer, the KV prefix from the hidden states (``None`` each without ``prefix_layers``), and its
        valid lengths."""
        cfg = self.cfg
        if not cfg.prefix_layers:
            return [None] * len(self.layers), None
        hidden = hidden.to(self.embedding.weight.dtype)
        if cfg.input == "split":
            r = cfg.llm_hidden // cfg.hidden
            x, lengths = hidden.reshape(hidden.shape[0], -1, cfg.hidden), lengths * r
        else:
            x = self.in_prefix(hidden)
        t = x.shape[1]
        x = x * padding_mask(lengths, t).unsqueeze(-1).to(x.dtype)
        pos = self._pos(torch.arange(t, device=x.device).unsqueeze(0), x.dtype)
        mask = bidirectional_mask(lengths, t)
        kvs = []
        for layer in self.layers_prefix:
            x, kv = layer(x, pos, mask)
            kvs.append(kv)
        return kvs, lengths

    def _frame_embed(self, codes: torch.Tensor) -> torch.Tensor:
        """``[..., K]`` codes -> the sum of their embeddings."""
        offsets = torch.arange(self.codebooks, device=codes.device) * self.codebook_size
        return self.embedding(codes + offsets).sum(-2)

    def _special(self, which: int, n: int, device: torch.device) -> torch.Tensor:
        return self.embedding(torch.full((n, 1), self.special + which, dtype=torch.long, device=device))

    def _check(self, codes: torch.Tensor) -> None:
        if codes.dim() != 3 or codes.shape[-1] != self.codebooks:
            raise ConfigError(f"nar_ar speech decoder: codes of shape {tuple(codes.shape)}; expected [N, frames, "
                              f"{self.codebooks}] (the decoder's codebooks must equal the codec's)")

    # -- training ---------------------------------------------------------------------------------------------
    def forward(self, hidden: torch.Tensor, embeds: torch.Tensor, text_lengths: torch.Tensor, codes: torch.Tensor,
                code_lengths: torch.Tensor, codebook_weights: list[float] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(codes)
        k, v = self.codebooks, self.codebook_size
        device = hidden.device
        text_lengths, code_lengths = text_lengths.to(device), code_lengths.to(device)
        cond, tl = self._condition(hidden, embeds, text_lengths)
        past, plen = self._prefix(hidden, text_lengths)
        n, t = cond.shape[:2]
        prefix = 1 + t
        f = codes.shape[1]
        codes = codes.to(device).long()
        x = torch.cat([self._special(BOS, n, device), cond, self._special(SOS, n, device),
                       self._frame_embed(codes)], dim=1)
        length = x.shape[1]
        idx = torch.arange(length, device=device)
        is_code = idx >= prefix
        # positions: prefix j -> j; speech step s -> 1 + T'_i + s (no gap where the text is padded)
        pos = torch.where(is_code.unsqueeze(0), (idx - prefix).unsqueeze(0) + 1 + tl.unsqueeze(1), idx.unsqueeze(0))
        sees_prefix = idx.unsqueeze(0) < (1 + tl).unsqueeze(1)                    # [N, L] valid prefix keys
        causal = is_code.unsqueeze(1) & is_code.unsqueeze(0) & (idx.unsqueeze(0) <= idx.unsqueeze(1))
        mask = sees_prefix.unsqueeze(1) | causal.unsqueeze(0)
        if plen is not None:                     # every position also sees the valid KV-prefix keys
            keys = padding_mask(plen, past[0][0].shape[2]).unsqueeze(1).expand(-1, length, -1)
            mask = torch.cat([keys, mask], dim=-1)
        rot = self._pos(pos, x.dtype)
        for layer, kv in zip(self.layers, past):
            x, _ = layer(x, rot, mask, kv)
        logits = self.out_fnn(self.norm(x[:, prefix:])).float()               # [N, F + 1, K V + 4]
        steps = torch.arange(f + 1, device=device).unsqueeze(0)
        is_frame = steps < code_lengths.unsqueeze(1)
        is_end = steps == code_lengths.unsqueeze(1)
        padded = F.pad(codes, (0, 0, 0, 1))
        weights = [1.0] * k if codebook_weights is None or len(codebook_weights) == 0 else list(codebook_weights)
        if len(weights) != k:
            raise ConfigError(f"codebook_weights has {len(weights)} entries; the decoder has {k} codebooks")
        total = logits.new_zeros(())
        for book in range(k):
            if weights[book] == 0:
                continue
            cols = logits[..., book * v:(book + 1) * v]
            target = padded[..., book]
            valid = is_frame
            if book == 0:
                cols = torch.cat([cols, logits[..., k * v:]], dim=-1)
                target = torch.where(is_end, v + EOS, target)
                valid = is_frame | is_end
            target = torch.where(valid, target, -100)
            total = total + weights[book] * F.cross_entropy(cols.flatten(0, 1), target.flatten(), reduction="sum",
                                                            ignore_index=-100)
        return total, code_lengths.sum()

    def dummy_loss(self, like: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(1, 1, self.cfg.llm_hidden, device=like.device, dtype=like.dtype)
        one = torch.ones(1, dtype=torch.long, device=like.device)
        codes = torch.zeros(1, 1, self.codebooks, dtype=torch.long, device=like.device)
        return self.forward(h, h, one, codes, one)[0]

    # -- inference --------------------------------------------------------------------------------------------
    def _step(self, x: torch.Tensor, pos: int, cache: list[KV]) -> torch.Tensor:
        rot = self._pos(torch.full((1, 1), pos, device=x.device), x.dtype)
        for i, layer in enumerate(self.layers):
            x, cache[i] = layer(x, rot, None, cache[i])
        return self.out_fnn(self.norm(x))[0, -1].float()

    def _pick(self, logits: torch.Tensor) -> torch.Tensor | None:
        """Greedy frame ``[K]`` from one step's logits, or ``None`` at end of speech."""
        k, v = self.codebooks, self.codebook_size
        first = torch.cat([logits[:v], logits[k * v + EOS:k * v + EOS + 1]])
        c0 = int(first.argmax())
        if c0 == v:
            return None
        rest = logits[v:k * v].view(k - 1, v).argmax(-1) if k > 1 else logits.new_zeros(0, dtype=torch.long)
        return torch.cat([torch.tensor([c0], device=logits.device), rest.long()])

    @torch.no_grad()
    def generate(self, hidden: torch.Tensor, embeds: torch.Tensor, max_frames: int | None = None,
                 chunk: int = 8) -> Iterator[torch.Tensor]:
        if chunk < 1:
            raise ConfigError(f"speech decoder generate: chunk={chunk}; use 1 or more frames")
        limit = self.max_frames if max_frames is None else int(max_frames)
        device = hidden.device
        cond, tl = self._condition(hidden.unsqueeze(0), embeds.unsqueeze(0),
                                   torch.tensor([hidden.shape[0]], device=device))
        x = torch.cat([self._special(BOS, 1, device), cond], dim=1)
        prefix = x.shape[1]
        rot = self._pos(torch.arange(prefix, device=device).unsqueeze(0), x.dtype)
        past, _ = self._prefix(hidden.unsqueeze(0), torch.tensor([hidden.shape[0]], device=device))
        cache: list[KV] = []
        for layer, kv in zip(self.layers, past):
            x, kv = layer(x, rot, None, kv)
            cache.append(kv)
        step = self._special(SOS, 1, device)
        pending: list[torch.Tensor] = []
        for s in range(limit):
            frame = self._pick(self._step(step, prefix + s, cache))
            if frame is None:
                break
            pending.append(frame)
            if len(pending) == chunk:
                yield torch.stack(pending).cpu()
                pending = []
            step = self._frame_embed(frame.view(1, 1, -1))
        if pending:
            yield torch.stack(pending).cpu()
