"""OmniModel: an LLM plus optional vision / audio encoders, their projectors and heads.

Inputs follow the data pipeline's contract: ``input_ids`` already holds one placeholder token
per feature position (``<|image_pad|>`` / ``<|video_pad|>`` for tiles and frames,
``<|audio_pad|>`` for audio), so the model encodes the media, projects them, and fills those
positions with ``masked_scatter`` before calling the LLM with ``inputs_embeds``.

The forward returns the *sum* of token cross-entropies and the number of supervised tokens,
so the engine can normalise by the token count of the whole global batch (all ranks, all
accumulation steps), plus weighted auxiliary losses in ``aux`` (MoE load balancing, the
user-state head). The engine adds those as they are. With a speech decoder (VITA-1.5 stage 3.2) it also
returns ``speech_sum`` / ``speech_frames``, the code loss of the batch's spoken answers, which the engine
normalises by the code frames of the global batch (:mod:`vita.model.speech.train_step`).

**No-hang contract.** A batch without a modality still runs that encoder and projector on
their dummy input and adds 0 x the output to the loss: every rank calls every module on
every step, which ZeRO-2/3 require (a rank that skips one crashes under gloo, hangs under NCCL).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vita.errors import ConfigError, DataError
from vita.model.attention import segment_causal_mask, segment_ids
from vita.model.loss import IGNORE_INDEX, lm_loss_sum
from vita.spec import AudioTokens, DataSpec, no_audio_tokens


def count_label_tokens(labels: torch.Tensor) -> int:
    """Supervised positions after the causal shift (the first token is never predicted)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def _sample(i: int, sample_ids) -> str:
    return f"sample {i}" + (f" ({sample_ids[i]})" if sample_ids is not None and i < len(sample_ids) else "")


class OmniModel(nn.Module):
    """Composite model. Module groups (``module_groups``) name what a stage can freeze, train or LoRA.

    Args:
        llm: any transformers causal LM.
        vision_tower, vision_projector: a :class:`~vita.model.vision.VisionTower` and a projector, or None.
        audio_encoder, audio_projector: an :class:`~vita.model.audio.AudioEncoder` and a projector, or None.
        audio_prompt_num: learned vectors prepended to every audio clip (VITA's ``audio_prompt_num``).
        speech_decoder: a :class:`~vita.model.speech.decoder.SpeechDecoder` on the LLM's last hidden states
            (module group ``speech_decoder``), or None; ``speech_codec``: its
            :class:`~vita.model.speech.base.SpeechCodec` (not a module: not in the state dict).
        speech_codec_spec: how data workers rebuild the codec (``DataSpec.speech_codec``: key, folder, options).
        speech_codebook_weights: loss weight per codebook; ``speech_max_frames``: longest spoken answer (frames).
        state_head_classes: size of the user-state head on the last hidden layer (0 = none).
        router_aux_loss_coef: weight of the MoE load-balancing loss (None = the LLM config's).
    """

    def __init__(self, llm: nn.Module, vision_tower: nn.Module | None = None, vision_projector: nn.Module | None = None,
                 audio_encoder: nn.Module | None = None, audio_projector: nn.Module | None = None, *,
                 audio_prompt_num: int = 0, state_head_classes: int = 0, state_loss_weight: float = 1.0,
                 state_class_weights: list[float] | None = None, router_aux_loss_coef: float | None = None,
                 speech_decoder: nn.Module | None = None, speech_codec=None,
                 speech_codec_spec: tuple | None = None, speech_codebook_weights: list[float] | None = None,
                 speech_max_frames: int = 0) -> None:
        super().__init__()
        if (speech_decoder is None) != (speech_codec is None):
            raise ConfigError("a speech decoder needs its speech codec and a codec its decoder: set both "
                              "model.speech.decoder and model.speech.codec, or neither")
        self.speech_decoder = speech_decoder
        self.speech_codec = speech_codec
        self.speech_codec_spec = speech_codec_spec or (
            (getattr(speech_codec, "name", "codec"), None, ()) if speech_codec is not None else None)
        self.speech_codebook_weights = list(speech_codebook_weights or [])
        self.speech_max_frames = int(speech_max_frames or getattr(speech_decoder, "max_frames", 0) or 0)
        self.llm = llm
        self.vision_tower, self.vision_projector = vision_tower, vision_projector
        self.audio_encoder, self.audio_projector = audio_encoder, audio_projector
        if (vision_tower is None) != (vision_projector is None) or (audio_encoder is None) != (audio_projector is None):
            raise ValueError("an encoder needs its projector and a projector its encoder")
        hidden = llm.config.get_text_config().hidden_size
        if audio_encoder is not None and audio_prompt_num > 0:
            # lives inside the audio encoder, as in VITA (``audio_encoder.prompt_embeddings``)
            audio_encoder.prompt_embeddings = nn.Embedding(audio_prompt_num, hidden)
        self.audio_prompt_num = audio_prompt_num if audio_encoder is not None else 0
        self.state_head = nn.Linear(hidden, state_head_classes) if state_head_classes > 0 else None
        self.state_loss_weight = state_loss_weight
        w = state_class_weights or [1.0] * state_head_classes
        self.register_buffer("state_class_weights", torch.tensor(w[:state_head_classes], dtype=torch.float32),
                             persistent=False)
        cfg_coef = getattr(llm.config, "router_aux_loss_coef", None)
        self.router_aux_loss_coef = router_aux_loss_coef if router_aux_loss_coef is not None else cfg_coef
        self.is_moe = hasattr(llm.config, "num_local_experts")
        self.image_token_id = self.video_token_id = self.audio_token_id = None
        self.fused_loss = "off"
        self.sequence_parallel = None
        """A :class:`~vita.model.sequence_parallel.SequenceParallel` (``engine.sequence_parallel`` > 1): the
        forward runs this rank's share of each sequence; the engine sets it."""
        """How the LM loss runs: ``off`` (plain logits), ``chunked`` or ``liger`` (vita/model/loss.py); the
        engine sets it from ``engine.fused_loss``."""

    # -- description ------------------------------------------------------------------------------
    @property
    def config(self):
        """The LLM's HF config (DeepSpeed and peft look for ``model.config``)."""
        return self.llm.config

    @property
    def has_media(self) -> bool:
        """Whether the model has a vision tower or an audio encoder (and so media placeholders and a data spec)."""
        return self.vision_tower is not None or self.audio_encoder is not None

    @property
    def has_data_spec(self) -> bool:
        """Whether the data pipeline needs this model's :meth:`data_spec` (encoders, or a speech codec)."""
        return self.has_media or self.speech_decoder is not None

    def set_media_token_ids(self, image: int | None, video: int | None, audio: int | None) -> None:
        """Placeholder ids (see :func:`vita.model.tokens.ensure_media_tokens`)."""
        self.image_token_id, self.video_token_id, self.audio_token_id = image, video, audio

    def module_groups(self) -> dict[str, nn.Module]:
        """Group name -> module: llm, vision_tower, vision_projector, audio_encoder, audio_projector, heads."""
        groups: dict[str, nn.Module] = {"llm": self.llm}
        for name in ("vision_tower", "vision_projector", "audio_encoder", "audio_projector"):
            if getattr(self, name) is not None:
                groups[name] = getattr(self, name)
        if self.state_head is not None:
            groups["heads"] = self.state_head
        if self.speech_decoder is not None:
            groups["speech_decoder"] = self.speech_decoder
        return groups

    def group_prefixes(self) -> dict[str, str]:
        """Module group -> its state-dict key prefix (``heads`` -> ``state_head.``), found by identity."""
        where = {id(m): name for name, m in self.named_modules()}
        return {group: where[id(m)] + "." for group, m in self.module_groups().items()}

    @property
    def tokens_per_tile(self) -> int:
        if self.vision_tower is None:
            return 0
        return self.vision_projector.num_tokens(self.vision_tower.num_tokens())

    def audio_token_count(self) -> Callable[[int], int]:
        """``feature frames -> <|audio_pad|> positions`` of a clip (prompts included), composed from the encoder's
        and the adapter's own counts (picklable: the data spec carries it to the data workers)."""
        if self.audio_encoder is None:
            return no_audio_tokens
        return AudioTokens(self.audio_encoder.token_count(), self.audio_projector.token_count(), self.audio_prompt_num)

    def audio_num_tokens(self, n_frames: int) -> int:
        """``<|audio_pad|>`` positions for a clip of ``n_frames`` feature frames (prompts included)."""
        return self.audio_token_count()(int(n_frames))

    def data_spec(self) -> DataSpec:
        """What the data pipeline needs: image settings, tokens per tile, audio feature kind and counts."""
        vt, ae = self.vision_tower, self.audio_encoder
        return DataSpec(
            image_size=vt.image_size if vt else None, image_mean=vt.image_mean if vt else None,
            image_std=vt.image_std if vt else None, tokens_per_tile=self.tokens_per_tile,
            patch_size=getattr(vt, "patch_size", 14) if vt else 14,
            max_audio_frames=getattr(ae, "window", None) if ae else None,
            audio_feature=ae.feature if ae else None, n_mels=ae.n_mels if ae else 0,
            audio_num_tokens=self.audio_token_count(), image_token_id=self.image_token_id,
            video_token_id=self.video_token_id, audio_token_id=self.audio_token_id, **self._speech_spec())

    def _speech_spec(self) -> dict:
        """The data spec's speech fields: the codec that encodes spoken answers, the longest answer in frames."""
        if self.speech_codec is None:
            return {}
        return {"speech_codec": self.speech_codec_spec,
                "speech_max_frames": self.speech_max_frames}

    def gradient_checkpointing_enable(self) -> None:
        self.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # -- encoders ---------------------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] -> [N, tokens_per_tile, hidden]."""
        return self.vision_projector(self.vision_tower(pixel_values))

    def encode_audio(self, features: torch.Tensor, lengths: torch.Tensor,
                     host_lengths: list[int] | None = None) -> tuple[torch.Tensor, list[int]]:
        """[A, T, n_mels], [A] -> padded [A, T', hidden] (prompts first) and each clip's token count
        (from ``host_lengths``, the same lengths as host ints, when given: no device read)."""
        x, out_len = self.audio_encoder(features, lengths)
        # the encoder's output past each clip's end (batch padding) is zeroed, as a clip alone ends there:
        # the projector's conv then sees the same input whatever the clip is batched or packed with
        valid = torch.arange(x.shape[1], device=x.device) < out_len.to(x.device).unsqueeze(1)
        x = self.audio_projector(x * valid.unsqueeze(-1).to(x.dtype))
        counts = [self.audio_num_tokens(int(n)) for n in (lengths if host_lengths is None else host_lengths)]
        if self.audio_prompt_num:
            prompts = self.audio_encoder.prompt_embeddings.weight.to(x.dtype)
            x = torch.cat([prompts.unsqueeze(0).expand(x.shape[0], -1, -1), x], dim=1)
        return x, counts

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                audio_features: torch.Tensor | None = None, audio_lengths: torch.Tensor | None = None,
                sample_ids: list[str] | None = None, host_batch: dict | None = None,
                speech_codes: torch.Tensor | None = None, speech_code_lengths: torch.Tensor | None = None,
                speech_spans: torch.Tensor | None = None, **_) -> dict:
        """Returns ``ce_sum`` (summed token cross-entropy, fp32), ``num_tokens`` and ``aux`` losses; with a speech
        decoder also ``speech_sum`` (fp32) and ``speech_frames`` (:mod:`vita.model.speech.train_step`).

        Args:
            input_ids, labels, attention_mask: [B, L]; media positions hold the placeholder ids
                (labels -100 there). With a state head, labels -101/-102 are user-state labels.
            position_ids: [B, L], optional (packing).
            pixel_values: [N, 3, S, S], every image tile and video frame of the micro-batch in the
                order their placeholder blocks appear (row-major); each fills ``tokens_per_tile``.
            audio_features: [A, T_max, n_mels] padded; ``audio_lengths`` [A] valid frames; clip i
                fills ``audio_num_tokens(audio_lengths[i])`` positions.
            sample_ids: the batch's ``ids`` (the engine passes them); only used in error messages.
            host_batch: the same micro-batch on the host (the engine passes the loader's CPU batch):
                placeholder checks and audio token counts read it, so the forward never waits on
                the device (no host sync); without it they read the tensors above.
            speech_codes, speech_code_lengths, speech_spans: the batch's spoken answers (``[S, F, K]``,
                ``[S]``, ``[S, 3]`` = ``row, start, end``); absent = none (the decoder still runs, x 0).

        A missing modality (key absent or first dim 0) runs that encoder on its dummy input x 0.
        With ``position_ids`` (packed rows, restarting per sample) attention stays inside each sample:
        a block-diagonal causal mask for sdpa/eager (vita/model/attention.py), the position ids alone
        for flash-attn (its varlen ``cu_seqlens`` path).
        """
        sp = self.sequence_parallel is not None and self.training  # evaluation: whole sequences on every rank
        embeds, _ = self.embed(input_ids, pixel_values, audio_features, audio_lengths, sample_ids, host_batch,
                               share_encoders=sp)
        if sp:
            if self.speech_decoder is not None:
                raise ConfigError("engine.sequence_parallel > 1 does not train a speech decoder (stage 3.2)")
            return self._forward_sp(embeds, labels, attention_mask, position_ids, host_batch)
        attention_mask = self._llm_attention_mask(attention_mask, position_ids, host_batch, embeds)
        lm_labels, state_labels = labels, None
        if self.state_head is not None:
            # VITA-FO: labels below -100 are user-state labels (-101 -> class 0, -102 -> class 1, ...)
            state_labels = torch.where(labels < IGNORE_INDEX, -101 - labels, torch.full_like(labels, IGNORE_INDEX))
            lm_labels = torch.where(labels < IGNORE_INDEX, torch.full_like(labels, IGNORE_INDEX), labels)
        kw = {}
        if self.is_moe:
            kw["output_router_logits"] = True
        fused = self.fused_loss != "off"
        if fused:  # the head runs inside the loss, in chunks: the LLM makes one position's logits only
            kw["logits_to_keep"] = 1
        out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
                       output_hidden_states=fused or self.state_head is not None or self.speech_decoder is not None,
                       **kw)
        target = lm_labels[:, 1:]
        if fused:
            hidden = out.hidden_states[-1][:, :-1]
            ce_sum = lm_loss_sum(hidden.reshape(-1, hidden.shape[-1]), self.llm.get_output_embeddings(),
                                 target.reshape(-1), self.fused_loss)
        else:
            logits = out.logits[:, :-1].float()
            ce_sum = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1),
                                     ignore_index=IGNORE_INDEX, reduction="sum")
        aux: dict[str, torch.Tensor] = {}
        if self.is_moe and getattr(out, "aux_loss", None) is not None and self.router_aux_loss_coef:
            aux["router"] = self.router_aux_loss_coef * out.aux_loss
        if self.state_head is not None:
            aux["state"] = self.state_loss_weight * self._state_loss(out.hidden_states[-1], state_labels)
        result = {"ce_sum": ce_sum, "num_tokens": (target != IGNORE_INDEX).sum(), "aux": aux}
        if self.speech_decoder is not None:
            from vita.model.speech.train_step import speech_loss

            result["speech_sum"], result["speech_frames"] = speech_loss(
                self.speech_decoder, out.hidden_states[-1], input_ids, self.llm.get_input_embeddings(), speech_codes,
                speech_code_lengths, speech_spans, self.speech_codebook_weights, sample_ids)
        return result

    def _forward_sp(self, embeds: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None,
                    position_ids: torch.Tensor | None, host_batch: dict | None) -> dict:
        """The LLM and the loss on this rank's share of the sequence (vita/model/sequence_parallel.py);
        ``embeds`` is already that share (:meth:`embed` with ``share_encoders``).

        The labels are shifted on the whole sequence before the cut; the whole sequence's segment ids
        (packing, padding, the cut's own padding to a multiple of N) drive the attention mask inside Ulysses."""
        sp = self.sequence_parallel
        if self.state_head is not None or self.is_moe:
            raise ConfigError("engine.sequence_parallel > 1 supports dense LLMs without the user-state head")
        B, L = labels.shape
        pad = sp.pad_len(L)
        target = torch.cat([labels[:, 1:], labels.new_full((B, 1), IGNORE_INDEX)], dim=1)
        no_padding = attention_mask is None or bool((attention_mask if host_batch is None
                                                     else host_batch["attention_mask"]).all())
        segments = None
        if position_ids is not None or not no_padding or pad:
            seg = segment_ids(attention_mask, position_ids, (B, L)).to(embeds.device)
            segments = torch.cat([seg, seg.new_full((B, pad), -1)], dim=1)  # the cut's padding: its own segment
        if position_ids is None:
            position_ids = torch.arange(L, device=embeds.device).expand(B, L)
        local_target = sp.shard(target, IGNORE_INDEX)
        fused = self.fused_loss != "off"
        sp.begin(segments)  # stays on through the backward (gradient checkpointing recomputes attention)
        out = self.llm(inputs_embeds=embeds, position_ids=sp.shard(position_ids, 0), use_cache=False,
                       output_hidden_states=fused, **({"logits_to_keep": 1} if fused else {}))
        if fused:
            hidden = out.hidden_states[-1]
            ce_sum = lm_loss_sum(hidden.reshape(-1, hidden.shape[-1]), self.llm.get_output_embeddings(),
                                 local_target.reshape(-1), self.fused_loss)
        else:
            logits = out.logits.float()
            ce_sum = F.cross_entropy(logits.reshape(-1, logits.size(-1)), local_target.reshape(-1),
                                     ignore_index=IGNORE_INDEX, reduction="sum")
        return {"ce_sum": ce_sum, "num_tokens": (local_target != IGNORE_INDEX).sum(), "aux": {}}

    def _llm_attention_mask(self, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None,
                            host_batch: dict | None, embeds: torch.Tensor):
        """What the LLM gets as ``attention_mask``: None (plain causal, or flash-attn with packed position ids),
        the 2-D padding mask, or a ready 4-D segment mask built on the device (sdpa / eager; no host sync)."""
        impl = getattr(self.llm.config, "_attn_implementation", None)
        if impl not in ("sdpa", "eager") or self.is_moe:  # MoE: the router loss reads a 2-D mask
            return None if position_ids is not None else attention_mask
        if position_ids is None:
            if host_batch is None:
                return attention_mask  # transformers decides (it reads the mask)
            if bool(host_batch["attention_mask"].all()):  # a host read: no padding, plain causal
                return None
        seg = segment_ids(attention_mask, position_ids, embeds.shape[:2]).to(embeds.device)
        return segment_causal_mask(seg, impl, embeds.dtype)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 pixel_values: torch.Tensor | None = None, audio_features: torch.Tensor | None = None,
                 audio_lengths: torch.Tensor | None = None, *, max_new_tokens: int = 128, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                 stop: list[list[int]] | None = None, pad_token_id: int | None = None,
                 use_cache: bool = True, seed: int | None = None) -> torch.Tensor:
        """New tokens for a left-padded prompt batch, padded to [B, T] with ``pad_token_id``.

        A thin tensor front of :func:`vita.model.generate.generate` (the one generation loop):
        ``stop`` defaults to the LLM's EOS id(s); ``do_sample=False`` is greedy.
        """
        from vita.model.generate import GenerationConfig, generate

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if stop is None:
            eos = self.llm.generation_config.eos_token_id if self.llm.generation_config is not None else None
            eos = self.llm.config.eos_token_id if eos is None else eos
            stop = [[int(e)] for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None]
        pad = pad_token_id if pad_token_id is not None else (stop[0][0] if stop else 0)
        gen = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature if do_sample else 0.0,
                               top_p=top_p, repetition_penalty=repetition_penalty, use_cache=use_cache, seed=seed)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        for k, v in (("pixel_values", pixel_values), ("audio_features", audio_features), ("audio_lengths", audio_lengths)):
            if v is not None:
                batch[k] = v
        rows = generate(self, batch, gen, stop, pad)
        out = torch.full((len(rows), max((len(r) for r in rows), default=0)), pad, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        return out

    def _state_loss(self, hidden: torch.Tensor, state_labels: torch.Tensor) -> torch.Tensor:
        """Class-weighted mean cross-entropy over the labelled positions (0, still in the graph, when there are
        none), as ``F.cross_entropy(weight=...)`` on the selected rows, without selecting them (no host sync)."""
        logits = self.state_head(hidden).float().reshape(-1, self.state_head.out_features)
        target = state_labels.reshape(-1)
        w = self.state_class_weights.to(logits.device)
        total = F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE_INDEX, reduction="sum")
        valid = target != IGNORE_INDEX
        denom = (w[torch.where(valid, target, 0)] * valid).sum()
        return total / denom.clamp_min(torch.finfo(denom.dtype).tiny)

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
              audio_features: torch.Tensor | None = None, audio_lengths: torch.Tensor | None = None,
              sample_ids: list[str] | None = None, host_batch: dict | None = None,
              share_encoders: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings with media features spliced in and every unused encoder tied in at zero;
        also that zero scalar. Checks read ``host_batch`` (CPU) when given (see :meth:`forward`).
        ``share_encoders`` (a sequence-parallel training forward, whose group holds one batch): each rank
        of the group encodes its share of the frames and clips (vita/model/sequence_parallel.py), and the
        embeddings returned are this rank's share of the sequence only."""
        sp = self.sequence_parallel if share_encoders else None
        host_ids = input_ids if host_batch is None else host_batch["input_ids"]
        host_lengths = None if host_batch is None or "audio_lengths" not in host_batch else \
            host_batch["audio_lengths"].tolist()
        embeds = self.llm.get_input_embeddings()(input_ids if sp is None else sp.shard(input_ids, 0))
        zero = embeds.new_zeros((), dtype=torch.float32)
        has_media = (pixel_values is not None and pixel_values.shape[0] > 0) or (
            audio_features is not None and audio_features.shape[0] > 0)
        if has_media and self.image_token_id is None and self.audio_token_id is None:
            raise DataError("the model does not know its placeholder token ids: call "
                            "vita.model.ensure_media_tokens(tokenizer, model) after building it")
        if self.vision_tower is not None:
            mask = self._mask(input_ids, self.image_token_id, self.video_token_id)
            host_mask = mask if host_batch is None else self._mask(host_ids, self.image_token_id, self.video_token_id)
            if pixel_values is not None and pixel_values.shape[0] > 0:
                feats = self.encode_images(pixel_values) if sp is None else \
                    sp.encode_shares(self.encode_images, pixel_values)  # each rank its frames
                self._check_vision(host_mask, feats.shape[0], sample_ids)
                embeds = self._splice(embeds, mask, host_mask, feats, sp)
            else:
                self._check_none(host_mask, "image/video", "pixel_values", sample_ids)
                zero = zero + 0.0 * self.encode_images(self.vision_tower.dummy_inputs()).float().sum()
        elif pixel_values is not None and pixel_values.shape[0] > 0:
            raise DataError("the batch has pixel_values but the model has no vision tower (set model.vision.tower)")
        if self.audio_encoder is not None:
            mask = self._mask(input_ids, self.audio_token_id)
            host_mask = mask if host_batch is None else self._mask(host_ids, self.audio_token_id)
            if audio_features is not None and audio_features.shape[0] > 0:
                if audio_lengths is None:
                    raise DataError("the batch has audio_features but no audio_lengths")
                if sp is None:
                    x, counts = self.encode_audio(audio_features, audio_lengths, host_lengths)
                else:  # each rank of the group encodes its share of the clips (windows)
                    x = sp.encode_shares(lambda f, n: self.encode_audio(f, n)[0], audio_features,
                                                             audio_lengths)
                    counts = [self.audio_num_tokens(int(n)) for n in (host_lengths or audio_lengths.tolist())]
                self._check_audio(host_mask, counts, sample_ids)
                feats = torch.cat([x[i, :n] for i, n in enumerate(counts)])
                embeds = self._splice(embeds, mask, host_mask, feats, sp)
            else:
                self._check_none(host_mask, "audio", "audio_features", sample_ids)
                x, _ = self.encode_audio(*self.audio_encoder.dummy_inputs())
                zero = zero + 0.0 * x.float().sum()
        elif audio_features is not None and audio_features.shape[0] > 0:
            raise DataError("the batch has audio_features but the model has no audio encoder (set model.audio.encoder)")
        # The unused encoders are tied in through the embeddings, not the loss: then on every rank their
        # backward runs after the LLM's, in one order, as ZeRO-3's per-module parameter gathers require
        # (tied in at the loss, a text-only rank next to a media rank broke that with LoRA).
        return embeds + zero.to(embeds.dtype), zero

    @staticmethod
    def _splice(embeds: torch.Tensor, mask: torch.Tensor, host_mask: torch.Tensor, feats: torch.Tensor, sp) -> torch.Tensor:
        """Fill the placeholder positions (``mask``, row-major) with ``feats``; under sequence parallelism
        ``embeds`` is this rank's share and gets the features of the placeholders inside it (indices from the
        host mask: no device read)."""
        if sp is None:
            return embeds.masked_scatter(mask.unsqueeze(-1), feats.to(embeds.dtype))
        order = (host_mask.reshape(-1).long().cumsum(0) - 1).view(host_mask.shape)  # feature index per position
        idx = sp.shard(order, 0)[sp.shard(host_mask, False)]
        local = feats.reshape(-1, feats.shape[-1]).index_select(0, idx.to(feats.device))
        return embeds.masked_scatter(sp.shard(mask, False).unsqueeze(-1), local.to(embeds.dtype))

    def _mask(self, input_ids: torch.Tensor, *token_ids: int | None) -> torch.Tensor:
        mask = torch.zeros_like(input_ids, dtype=torch.bool)
        for t in token_ids:
            if t is not None:
                mask |= input_ids == t
        return mask

    @staticmethod
    def _check_none(mask: torch.Tensor, what: str, key: str, sample_ids) -> None:
        if bool(mask.any()):
            i = int(mask.any(dim=1).nonzero()[0])
            raise DataError(f"{_sample(i, sample_ids)} has {int(mask[i].sum())} {what} placeholder positions but the "
                            f"batch carries no {key}")

    def _check_vision(self, mask: torch.Tensor, n_tiles: int, sample_ids) -> None:
        per = self.tokens_per_tile
        counts = mask.sum(dim=1).tolist()
        for i, c in enumerate(counts):
            if c % per:
                raise DataError(f"{_sample(i, sample_ids)} has {c} image/video placeholder positions, not a multiple of "
                                f"the {per} tokens per tile/frame")
        if sum(counts) != n_tiles * per:
            raise DataError(f"image/video placeholders for {sum(counts) // per} tiles/frames (per sample: "
                            f"{[c // per for c in counts]}) but pixel_values has {n_tiles} "
                            f"({per} positions each); first sample: {_sample(0, sample_ids)}")

    @staticmethod
    def _check_audio(mask: torch.Tensor, clip_tokens: list[int], sample_ids) -> None:
        counts = mask.sum(dim=1).tolist()
        j = 0
        for i, c in enumerate(counts):
            got = 0
            while got < c and j < len(clip_tokens):
                got += clip_tokens[j]
                j += 1
            if got != c:
                raise DataError(f"{_sample(i, sample_ids)} has {c} audio placeholder positions but its clips give "
                                f"{got} features (clip token counts: {clip_tokens})")
        if j != len(clip_tokens):
            raise DataError(f"audio_features has {len(clip_tokens)} clips but the placeholders use only {j} "
                            f"(clip token counts: {clip_tokens})")
