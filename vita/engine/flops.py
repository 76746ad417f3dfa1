"""Model FLOPs of a training step, and MFU against a peak.

What is counted (matrix multiplies only, as ``torch.utils.flop_counter`` does; norms, activations,
softmax, the loss and optimizer are left out). A module applied to ``t`` positions costs, with
``N`` its parameters (biases and norms included: a small overcount):

    forward                       F = 2·N·t  (+ attention: 4·L·d·s² per sequence of length s)
    backward, input gradients     F, when a gradient has to pass through the module
                                  (it, or something before it, has a trainable parameter)
    backward, weight gradients    2·N_trainable·t  (attention has no weights: none)

So a fully trained module costs 6·N·t + 12·L·d·s² per sequence (the usual ``6N + 12·L·d·s`` per
token of Kaplan et al. / Megatron with ``d`` = heads × head_dim); a frozen LLM under a trained
projector 4·N·t + 8·L·d·s²; a frozen encoder at the input (nothing before it to train) 2·N·t + 4·L·d·s².
LoRA adds only its adapters' weight gradients. The parts and their ``t`` and ``s``:

- LLM: N = every parameter except the input embedding (the LM head is counted even when tied,
  since its matmul runs); t = non-pad tokens; s = each sample's own length (packed rows: each
  packed sample; padding is not useful work, so it is not counted: MFU then shows what padding wastes).
- Vision tower: t = patches (+1 CLS where the tower has one) per tile or video frame, s = t;
  an S2 tower runs every scale's sub-tiles. Projector: t = tokens per tile out of the tower.
- Audio encoder: t = the encoder's output frames per clip (VITA: after its x4 conv subsampling;
  Whisper: its whole 30 s window, which it always runs), s = t. Its front convolutions are counted
  at their own output positions (VITA: time x mel of each Conv2d; Whisper: conv1 at 2t, conv2 at t).
  Projector: t = the tokens it outputs per clip.
- Dummy encoder passes on batches without that modality (the no-hang contract) are not counted.
- Gradient checkpointing's recomputed forward is not counted (model FLOPs, not hardware FLOPs).

Checked against ``FlopCounterMode`` on tiny models in ``tests/test_flops.py`` (within 5%, measured
within 3%; eager attention, as FlopCounterMode does not see the CPU SDPA kernel): the formula
counts bias and norm parameters as matmul weights, the first conv's input gradient that is never
computed, VITA's relative-position projections not at all, and causal attention as a full s², which is what eager and SDPA-with-a-mask attention compute (flash-attn varlen does about half).

MFU = (FLOPs of the step / world size / step time) / ``engine.peak_tflops`` (per device).
"""

from __future__ import annotations

from torch import nn

from vita.model.params import numel


def _n(module: nn.Module | None, trainable_only: bool = False) -> int:
    if module is None:
        return 0
    return sum(numel(p) for p in module.parameters() if p.requires_grad or not trainable_only)  # ZeRO-3: whole sizes


def _any_trainable(*modules: nn.Module | None) -> bool:
    return any(p.requires_grad for m in modules if m is not None for p in m.parameters())


class _Part:
    """One module's per-position and per-sequence FLOPs (fwd + bwd), from its parameters' state."""

    def __init__(self, n: int, n_trainable: int, layers: int, d_attn: int, grad_flows: bool) -> None:
        self.per_pos = 2 * n * (2 if grad_flows else 1) + 2 * n_trainable
        self.per_seq2 = 4 * layers * d_attn * (3 if grad_flows else 1)  # x s² per sequence

    def flops(self, positions: int, sum_sq: int) -> int:
        return self.per_pos * positions + self.per_seq2 * sum_sq


def _attn_geometry(config) -> tuple[int, int]:
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "encoder_layers", 0)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "encoder_attention_heads", 1)
    hidden = getattr(config, "hidden_size", None) or config.d_model
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return layers, heads * head_dim


class StepFlops:
    """FLOPs of training ``model`` (an OmniModel) on micro-batches; reads trainability once, at build."""

    def __init__(self, model: nn.Module) -> None:
        m = model
        llm_cfg = m.llm.config.get_text_config()
        emb = m.llm.get_input_embeddings()
        n_llm = _n(m.llm) - numel(emb.weight)
        out = m.llm.get_output_embeddings()
        if out is not None and out.weight is emb.weight:
            n_llm += numel(out.weight)  # tied: one tensor, two uses; the head is a matmul
        n_llm_tr = _n(m.llm, True) - (numel(emb.weight) if emb.weight.requires_grad else 0)
        if out is not None and out.weight is emb.weight and emb.weight.requires_grad:
            n_llm_tr += numel(out.weight)
        head = getattr(m, "state_head", None)  # the user-state head runs on every position, as the LM head
        self.llm = _Part(n_llm + _n(head), n_llm_tr + _n(head, True), *_attn_geometry(llm_cfg), _any_trainable(m))
        vt, vp = getattr(m, "vision_tower", None), getattr(m, "vision_projector", None)
        self.vision = self.vproj = None
        if vt is not None:
            inner = getattr(vt, "tower", vt)  # S2Tower wraps a VisionTower
            layers, d = _attn_geometry(inner.model.config)
            self.vision = _Part(_n(vt), _n(vt, True), layers, d, _any_trainable(vt))
            self.vproj = _Part(_n(vp), _n(vp, True), 0, 0, _any_trainable(vt, vp))
            patches = (inner.image_size // inner.patch_size) ** 2 + (1 if inner.drop_cls else 0)
            subtiles = sum((s // inner.image_size) ** 2 for s in vt.scales) if hasattr(vt, "scales") else 1
            self.tile_seq, self.subtiles, self.tile_tokens = patches, subtiles, vt.num_tokens()
        ae, ap = getattr(m, "audio_encoder", None), getattr(m, "audio_projector", None)
        self.audio = self.aproj = None
        if ae is not None:
            self._ae, self._ap = ae, ap
            self._window = getattr(ae, "window", None)
            self._convs = _audio_convs(ae)  # [(conv, positions per output frame or callable)]
            conv_params = [p for c, _ in self._convs for p in c.parameters()]
            prompts = getattr(ae, "prompt_embeddings", None)
            skip = conv_params + (list(prompts.parameters()) if prompts is not None else [])
            n_ae = _n(ae) - sum(numel(p) for p in skip)
            n_ae_tr = _n(ae, True) - sum(numel(p) for p in skip if p.requires_grad)
            cfg = getattr(getattr(ae, "encoder", None), "config", None)
            if cfg is not None:  # Whisper
                layers, d = _attn_geometry(cfg)
            else:  # VITA's encoder (whale): its transformer blocks x width
                from vita.model.whale import Block

                layers, d = sum(isinstance(x, Block) for x in ae.modules()), ae.hidden_size
            flows = _any_trainable(ae)
            self.audio = _Part(n_ae, n_ae_tr, layers, d, flows)
            self._conv_parts = [_Part(_n(c), _n(c, True), 0, 0, flows) for c, _ in self._convs]
            self.aproj = _Part(_n(ap), _n(ap, True), 0, 0, _any_trainable(ae, ap))

    # -- one micro-batch --------------------------------------------------------------------------
    @staticmethod
    def sample_lengths(mb: dict) -> list[int]:
        """Each sample's token count: non-pad per row, or each packed sample (``position_ids`` restarts)."""
        mask = mb["attention_mask"].bool()
        pos = mb.get("position_ids")
        if pos is None:
            return [int(n) for n in mask.sum(dim=1)]
        out = []
        for r in range(mask.shape[0]):
            k = int(mask[r].sum())
            starts = (pos[r, :k] == 0).nonzero().flatten().tolist() + [k]
            out += [b - a for a, b in zip(starts[:-1], starts[1:]) if b > a]
        return out

    def micro_batch(self, mb: dict) -> int:
        """Training FLOPs (forward + backward) of one micro-batch, per the module docstring."""
        lens = self.sample_lengths(mb)
        total = self.llm.flops(sum(lens), sum(n * n for n in lens))
        pix = mb.get("pixel_values")
        if self.vision is not None and pix is not None and pix.shape[0] > 0:
            tiles = int(pix.shape[0]) * self.subtiles
            total += self.vision.flops(tiles * self.tile_seq, tiles * self.tile_seq**2)
            total += self.vproj.flops(int(pix.shape[0]) * self.tile_tokens, 0)
        feats = mb.get("audio_features")
        if self.audio is not None and feats is not None and feats.shape[0] > 0:
            frames = [int(n) for n in mb["audio_lengths"]]
            if self._window:  # Whisper always runs its full window
                enc = [self._ae.num_tokens(self._window)] * len(frames)
            else:
                enc = [self._ae.num_tokens(n) for n in frames]
            total += self.audio.flops(sum(enc), sum(t * t for t in enc))
            for part, (_, where) in zip(self._conv_parts, self._convs):
                total += part.flops(sum(where(n, t) for n, t in zip(frames, enc)), 0)
            total += self.aproj.flops(sum(self._ap.num_tokens(t) for t in enc), 0)
        return total


def _audio_convs(ae: nn.Module) -> list:
    """The audio encoder's front convolutions and, per clip, the output positions each runs at
    (from input frames ``n`` and encoder frames ``t``): VITA's two Conv2d over (time, mel), Whisper's two Conv1d."""
    from vita.model.whale import Subsampling4

    sub = next((x for x in ae.modules() if isinstance(x, Subsampling4)), None)
    if sub is not None:
        f1 = (ae.n_mels - 1) // 2
        f2 = (f1 - 1) // 2
        return [(sub.conv[0], lambda n, t: ((n - 1) // 2) * f1), (sub.conv[2], lambda n, t: t * f2)]
    enc = getattr(ae, "encoder", None)
    if hasattr(enc, "conv1") and hasattr(enc, "conv2"):  # Whisper: conv1 at the input rate, conv2 stride 2
        return [(enc.conv1, lambda n, t: 2 * t), (enc.conv2, lambda n, t: t)]
    return []


def throughput(flops: float, step_time_s: float, world_size: int, peak_tflops: float | None) -> dict[str, float]:
    """``flops_per_step``, ``tflops`` (achieved per device) and, given a peak, ``mfu`` (0..1)."""
    tflops = flops / max(world_size, 1) / max(step_time_s, 1e-12) / 1e12
    out = {"flops_per_step": float(flops), "tflops": tflops}
    if peak_tflops:
        out["mfu"] = tflops / peak_tflops
    return out


__all__ = ["StepFlops", "throughput"]
