"""``ctc``: LLaMA-Omni's speech generator — upsample the answer x lambda, LLaMA layers, CTC over one codebook.

Structure (the shape of LLaMA-Omni's public ``omni_speech/model/speech_generator/speech_generator.py``,
``SpeechGeneratorCTC`` in ``ictnlp/LLaMA-Omni``; written for vita):

1. Every answer position's LLM hidden state (plus its token embedding when ``use_embeds``) is repeated
   ``upsample`` (lambda) times and projected to the decoder width (``input_proj``).
2. ``layers`` LLaMA layers, causal by default (as LLaMA-Omni's layers run), so the units of the first words are
   final before the later words are read: generation streams token by token with a KV cache.
3. ``output_proj`` gives ``codebook_size + 1`` classes (the last is the CTC blank); the loss is CTC (summed over
   answers); generation is greedy CTC: the best class per position, repeats merged, blanks dropped.

**One codebook only**: a codec with ``codebooks != 1`` is refused (use a 1-codebook codec, or ``nar_ar``).
**Too many codes for the text**: CTC needs at least as many positions as codes (plus one per repeated code).
When ``upsample x T`` is shorter, training stretches the answer over the needed length (uniform
assignment, as LLaMA-Omni does) so no sample is dropped; generation always uses ``upsample x T`` positions,
so raise ``upsample`` if your codes per text token often exceed it (``vita.check`` speaks of long answers).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vita.errors import ConfigError
from vita.model.speech.blocks import KV, Block, RMSNorm, padding_mask, rope
from vita.model.speech.decoder import SpeechDecoder, checked_config


@dataclass
class CTCConfig:
    """Shape of a :class:`CTCDecoder` (``decoder_overrides`` sets any field but the first three)."""

    llm_hidden: int
    codebooks: int
    codebook_size: int
    hidden: int = 256
    heads: int = 4
    intermediate: int = 768
    layers: int = 2
    upsample: int = 25
    """Positions per text token (lambda; LLaMA-Omni: 25 for 50 Hz units)."""
    causal: bool = True
    use_embeds: bool = False
    """Add the token embeddings to the hidden states (LLaMA-Omni reads the hidden states only)."""
    max_frames: int = 4096
    rope_theta: float = 10000.0
    rms_eps: float = 1e-6


def make_config(llm_hidden: int, codebooks: int, codebook_size: int, **overrides) -> CTCConfig:
    if int(codebooks) != 1:
        raise ConfigError(f"ctc speech decoder predicts one codebook but the codec gives {codebooks}: use a "
                          "1-codebook codec (e.g. mel_rvq with codebooks=1) or the nar_ar decoder")
    cfg = checked_config(CTCConfig, "ctc", llm_hidden, 1, codebook_size, overrides)
    if cfg.hidden % cfg.heads or cfg.upsample < 1 or cfg.layers < 1:
        raise ConfigError(f"ctc speech decoder: bad shape {asdict(cfg)} (hidden a multiple of heads, upsample >= 1)")
    return cfg


class CTCDecoder(SpeechDecoder):
    """Upsample + LLaMA layers + CTC (see the module docstring)."""

    def __init__(self, cfg: CTCConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.config = asdict(cfg)
        self.codebooks, self.codebook_size, self.max_frames = 1, cfg.codebook_size, cfg.max_frames
        self.blank = cfg.codebook_size
        self.input_proj = nn.Linear(cfg.llm_hidden, cfg.hidden)
        self.layers = nn.ModuleList(Block(cfg.hidden, cfg.heads, cfg.intermediate, cfg.rms_eps)
                                    for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden, cfg.rms_eps)
        self.output_proj = nn.Linear(cfg.hidden, cfg.codebook_size + 1)

    def _inputs(self, hidden: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        x = hidden.to(self.input_proj.weight.dtype)
        if self.cfg.use_embeds:
            x = x + embeds.to(x.dtype)
        return x

    def _run(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None,
             cache: list[KV] | None = None) -> torch.Tensor:
        rot = rope(positions, self.cfg.hidden // self.cfg.heads, self.cfg.rope_theta, x.dtype)
        for i, layer in enumerate(self.layers):
            x, kv = layer(x, rot, mask, None if cache is None else cache[i])
            if cache is not None:
                cache[i] = kv
        return self.output_proj(self.norm(x)).float()

    def _mask(self, lengths: torch.Tensor, length: int) -> torch.Tensor:
        valid = padding_mask(lengths, length)
        mask = valid.unsqueeze(1) & valid.unsqueeze(2)
        if self.cfg.causal:
            mask = mask & torch.ones(length, length, dtype=torch.bool, device=lengths.device).tril()
        mask[..., 0] = True
        return mask

    def forward(self, hidden: torch.Tensor, embeds: torch.Tensor, text_lengths: torch.Tensor, codes: torch.Tensor,
                code_lengths: torch.Tensor, codebook_weights: list[float] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if codes.dim() != 3 or codes.shape[-1] != 1:
            raise ConfigError(f"ctc speech decoder: codes of shape {tuple(codes.shape)}; expected [N, frames, 1]")
        device = hidden.device
        tl, cl = text_lengths.to(device).long(), code_lengths.to(device).long()
        targets = codes[..., 0].to(device).long()
        steps = torch.arange(targets.shape[1], device=device).unsqueeze(0)
        repeats = ((targets[:, 1:] == targets[:, :-1]) & (steps[:, 1:] < cl.unsqueeze(1))).sum(1)
        up = torch.maximum(tl * self.cfg.upsample, cl + repeats)                # CTC-feasible lengths
        length = int(up.max())
        j = torch.arange(length, device=device).unsqueeze(0)
        src = torch.div(j * tl.unsqueeze(1), up.unsqueeze(1).clamp(min=1), rounding_mode="floor")
        src = torch.minimum(src, (tl - 1).clamp(min=0).unsqueeze(1))
        x = self._inputs(hidden, embeds)
        x = torch.gather(x, 1, src.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = self.input_proj(x) * padding_mask(up, length).unsqueeze(-1).to(x.dtype)
        logp = F.log_softmax(self._run(x, j.expand(len(x), -1), self._mask(up, length)), dim=-1)
        loss = F.ctc_loss(logp.transpose(0, 1), targets, up, cl, blank=self.blank, reduction="sum")
        weights = codebook_weights or [1.0]
        if len(weights) != 1:
            raise ConfigError(f"codebook_weights has {len(weights)} entries; the ctc decoder has 1 codebook")
        return loss * float(weights[0]), cl.sum()

    def dummy_loss(self, like: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(1, 1, self.cfg.llm_hidden, device=like.device, dtype=like.dtype)
        one = torch.ones(1, dtype=torch.long, device=like.device)
        return self.forward(h, h, one, torch.zeros(1, 1, 1, dtype=torch.long, device=like.device), one)[0]

    @torch.no_grad()
    def generate(self, hidden: torch.Tensor, embeds: torch.Tensor, max_frames: int | None = None,
                 chunk: int = 8) -> Iterator[torch.Tensor]:
        if chunk < 1:
            raise ConfigError(f"speech decoder generate: chunk={chunk}; use 1 or more frames")
        limit = self.max_frames if max_frames is None else int(max_frames)
        lam = self.cfg.upsample
        x = self.input_proj(self._inputs(hidden, embeds)).repeat_interleave(lam, dim=0).unsqueeze(0)
        device = x.device
        if self.cfg.causal:     # token by token, KV cache: a unit is final as soon as its position is computed
            cache: list = [None] * len(self.layers)
            pieces = ((x[:, i:i + lam], torch.arange(i, i + lam, device=device)) for i in range(0, x.shape[1], lam))
        else:
            cache = None
            pieces = iter([(x, torch.arange(x.shape[1], device=device))])
        prev, out, emitted = self.blank, [], 0
        for block, pos in pieces:
            n = block.shape[1]
            mask = torch.ones(n, n, dtype=torch.bool, device=device).tril() if self.cfg.causal else None
            if mask is not None and cache[0] is not None:
                mask = torch.cat([torch.ones(n, cache[0][0].shape[2], dtype=torch.bool, device=device), mask], dim=1)
            best = self._run(block, pos.unsqueeze(0), None if mask is None else mask.unsqueeze(0), cache)[0].argmax(-1)
            for unit in best.tolist():
                if unit != prev and unit != self.blank and emitted < limit:
                    out.append(unit)
                    emitted += 1
                prev = unit
            while len(out) >= chunk:
                yield torch.tensor(out[:chunk], dtype=torch.long).view(-1, 1)
                out = out[chunk:]
            if emitted >= limit:
                break
        if out:
            yield torch.tensor(out, dtype=torch.long).view(-1, 1)
