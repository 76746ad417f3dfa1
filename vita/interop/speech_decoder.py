"""Read VITA-1.5 / Freeze-Omni's released speech decoder into vita's ``nar_ar`` (issue 19, point 7).

``python -m vita.interop.speech_decoder FREEZE_OMNI_CHECKPOINTS --out decoder.safetensors`` writes the decoder's
weights in vita's layout and prints the ``model.speech`` settings that rebuild it; stage 3.2 then starts from it
with ``model.speech.decoder=nar_ar model.speech.decoder_pretrained=decoder.safetensors`` and those overrides.

**What the public code defines** (read, not copied): Freeze-Omni ``VITA-MLLM/Freeze-Omni`` at commit
``3e17af43b4fe64ba9609b4e1ba94c443c45101c0``, ``models/decoder/decoder.py`` (``LLM2TTSCodecAR``) and
``models/decoder/llm2tts.py`` (``llm2TTS.get_model``); VITA-1.5 vendors the same files as
``Tencent/VITA`` ``vita/model/vita_tts/decoder/{decoder,llm2tts}.py`` (commit
``cbe20436580daaff9d1d23555b7c61bbccc6c9de``). The checkpoint folder holds ``decoder/model.json`` (a JSON list
``[idim, odim, args]``; ``args`` has ``idim``, ``odim``, ``transformer_attention_dim``, ``transformer_linear_units``,
``transformer_num_blocks``, ``transformer_attention_heads``, ``encoder_output_dim``, ``kv_cache_prefix_finetune``
...) and ``decoder/final.pt`` (a pickled state dict, possibly under ``"model"``). The module: ``embedding``
(``nn.Embedding(odim + 4, idim)``: ``odim`` codes, then BOS, SOS, EOS, PAD), ``layers_pre_nn`` (``L // 2``
LLaMA decoder layers run bidirectionally over the answer's token embeddings), ``layers`` (``L`` LLaMA layers, AR
over ``[BOS, pre_nn output, SOS, codes]``), ``norm`` (RMSNorm), ``out_fnn`` (``Linear(dim, odim + 4)``), and with
``kv_cache_prefix_finetune`` ``layers_prefix`` (``L`` layers over the LLM hidden states whose per-layer keys and
values prefix the AR layers' attention). The inputs are the answer's LLM vectors cut into 896-wide pieces
(``reshape(-1, 896)``: a 3,584-wide Qwen2-7B vector is 4 positions). VITA-1.5's ``llm2TTS.run`` sets
``prefix = None``: it never runs ``layers_prefix``; Freeze-Omni's passes the LLM hidden states as the prefix.

=================================  ===========================  ===================================================
Freeze-Omni / VITA-1.5 key         vita ``nar_ar`` key          note
=================================  ===========================  ===================================================
``embedding.weight``               ``embedding.weight``         same rows (codes, BOS, SOS, EOS, PAD)
``layers_pre_nn.{i}.*``            ``nar_layers.{i}.*``         the NAR decoder, ``nar_layers = L // 2``
``layers.{i}.*``                   ``layers.{i}.*``             the AR decoder
``norm.weight``                    ``norm.weight``
``out_fnn.weight`` / ``.bias``     ``out_fnn.weight`` / ``.bias``
``layers_prefix.{i}.*``, i < L-1   ``layers_prefix.{i}.*``      the KV-prefix NAR (``prefix_layers = L``); with
                                                                ``prefix=False`` (VITA-1.5) **not mapped**
``layers_prefix.{L-1}.``           same key                     its keys/values; with ``prefix=False`` not mapped
``input_layernorm``, ``k_proj``,
``v_proj``
``layers_prefix.{L-1}.``           — **not mapped**             Freeze-Omni never reads that layer's output
``q_proj``, ``o_proj``, ``mlp.*``,
``post_attention_layernorm``
``rotary_emb*.inv_freq``           — not needed                 recomputed from ``rope_theta``
=================================  ===========================  ===================================================

Per layer the sub-keys are LLaMA's (``self_attn.{q,k,v,o}_proj.weight``, ``mlp.{gate,up,down}_proj.weight``,
``input_layernorm.weight``, ``post_attention_layernorm.weight``) on both sides. The built decoder uses
``input="split"``, ``use_hidden=False`` (the token embeddings in 896-wide pieces feed the NAR decoder, as in
their ``run``; the hidden states, in the same pieces, feed only the KV prefix), one codebook of ``odim`` codes,
greedy decoding (Freeze-Omni samples top-k with a repetition penalty: not carried). Nothing of vita's
``nar_ar`` is left at random init by this mapping. The codec (TiCodec) is not covered: see docs/SPEECH.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vita.errors import CheckpointError, one_line_errors
from vita.model.speech.nar_ar import NarArDecoder, make_config

SOURCE = ("VITA-MLLM/Freeze-Omni@3e17af43b4fe64ba9609b4e1ba94c443c45101c0 models/decoder/decoder.py; "
          "Tencent/VITA@cbe20436580daaff9d1d23555b7c61bbccc6c9de vita/model/vita_tts/decoder/decoder.py")
RENAMES = ((re.compile(r"^layers_pre_nn\.(\d+)\.(.+)$"), r"nar_layers.\1.\2"),
           (re.compile(r"^layers\.(\d+)\.(.+)$"), r"layers.\1.\2"),
           (re.compile(r"^layers_prefix\.(\d+)\.(.+)$"), r"layers_prefix.\1.\2"),
           (re.compile(r"^(embedding\.weight|norm\.weight|out_fnn\.weight|out_fnn\.bias)$"), r"\1"))
NO_PREFIX = "KV-prefix NAR over the LLM hidden states, left out (prefix=False: VITA-1.5's inference never runs it)"
LAST_PREFIX = ("the last prefix layer's query/output/MLP: Freeze-Omni never reads that layer's output, only its "
               "keys and values")
REASONS = ((re.compile(r"(^|\.)inv_freq$"), "rotary buffer: recomputed from rope_theta"),)
LLM_HIDDEN = 3584
"""Qwen2-7B / Qwen2.5-7B width: the LLM of Freeze-Omni and VITA-1.5."""


@dataclass
class DecoderImport:
    """What :func:`load_freeze_omni_decoder` did: the decoder, its ``nar_ar`` overrides, and the key accounting."""

    decoder: NarArDecoder
    overrides: dict[str, Any]
    mapped: list[tuple[str, str]] = field(default_factory=list)
    unmapped: dict[str, str] = field(default_factory=dict)
    """Source key -> why it was not mapped."""
    left_at_init: list[str] = field(default_factory=list)
    """vita keys no source key filled (empty for a whole Freeze-Omni checkpoint)."""

    def report(self) -> str:
        lines = [f"mapped {len(self.mapped)} tensors into nar_ar ({SOURCE})"]
        reasons: dict[str, list[str]] = {}
        for key, why in self.unmapped.items():
            reasons.setdefault(why, []).append(key)
        for why, keys in reasons.items():
            lines.append(f"not mapped ({len(keys)}: {why}): {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}")
        if self.left_at_init:
            lines.append(f"left at init ({len(self.left_at_init)}): {', '.join(self.left_at_init[:6])}")
        return "\n".join(lines)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - name the file, keep the cause short
        raise CheckpointError(f"{path}: unreadable with torch.load(weights_only=True) ({type(e).__name__}: "
                              f"{str(e)[:160]}); re-save its state dict alone (torch.save(sd, path))") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (or one under 'model')")
    return obj


def read_freeze_omni(source: str | Path | dict) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The state dict and the ``args`` of ``model.json`` (None when absent) of a Freeze-Omni decoder: ``source`` is
    the checkpoint folder (``decoder/`` inside), the decoder folder, a ``final.pt`` file or a state dict."""
    if isinstance(source, dict):
        return source, None
    path = Path(source)
    if path.is_dir() and (path / "decoder").is_dir():
        path = path / "decoder"
    weights = path / "final.pt" if path.is_dir() else path
    if not weights.is_file():
        raise CheckpointError(f"{source}: no Freeze-Omni decoder weights (expected decoder/final.pt)")
    conf = weights.parent / "model.json"
    args = None
    if conf.is_file():
        data = json.loads(conf.read_text())
        args = data[2] if isinstance(data, list) and len(data) == 3 else data
        if not isinstance(args, dict):
            raise CheckpointError(f"{conf}: expected [idim, odim, args] as Freeze-Omni writes it")
    return _read_state(weights), args


def overrides_for(state: dict[str, torch.Tensor], args: dict[str, Any] | None, heads: int | None = None,
                  prefix: bool | None = None) -> tuple[int, dict[str, Any]]:
    """``(codebook_size, nar_ar overrides)`` of a Freeze-Omni decoder, from its ``args`` and tensor shapes."""
    if "embedding.weight" not in state or "norm.weight" not in state:
        raise CheckpointError("not a Freeze-Omni / VITA-1.5 speech decoder: no embedding.weight / norm.weight "
                              f"(keys: {', '.join(sorted(state)[:5])} ...)")
    rows, dim = state["embedding.weight"].shape
    ar = len({k.split(".")[1] for k in state if k.startswith("layers.")})
    nar = len({k.split(".")[1] for k in state if k.startswith("layers_pre_nn.")})
    kv = len({k.split(".")[1] for k in state if k.startswith("layers_prefix.")}) if prefix is not False else 0
    gate = state.get("layers.0.mlp.gate_proj.weight")
    heads = heads or (args or {}).get("transformer_attention_heads")
    if heads is None:
        raise CheckpointError("the Freeze-Omni decoder's head count is not in its tensors: give model.json next to "
                              "final.pt or heads=N (--heads N)")
    return rows - 4, dict(hidden=int(dim), heads=int(heads), intermediate=int(gate.shape[0]) if gate is not None else 4 * dim,
                          nar_layers=nar, ar_layers=ar, input="split", use_hidden=False, prefix_layers=kv)


def load_freeze_omni_decoder(source: str | Path | dict, llm_hidden: int = LLM_HIDDEN, heads: int | None = None,
                             prefix: bool | None = None, **extra: Any) -> DecoderImport:
    """Build vita's ``nar_ar`` from a Freeze-Omni / VITA-1.5 speech decoder (see the module docstring's table).

    Args:
        source: checkpoint folder, ``decoder/`` folder, ``final.pt`` or a state dict.
        llm_hidden: the LLM's width (3,584 for their Qwen2/2.5-7B; a multiple of the decoder's 896).
        heads: attention heads when there is no ``model.json``.
        prefix: keep the KV-prefix NAR (``layers_prefix``) when the checkpoint has one: ``None``/``True`` =
            Freeze-Omni's inference (the LLM hidden states feed it), ``False`` = VITA-1.5's (never run; dropped).
        extra: further ``nar_ar`` overrides (``max_frames`` ...).
    """
    state, args = read_freeze_omni(source)
    size, overrides = overrides_for(state, args, heads, prefix)
    last = f"layers_prefix.{overrides['prefix_layers'] - 1}."
    overrides.update(extra)
    decoder = NarArDecoder(make_config(llm_hidden, 1, size, **overrides))
    own = decoder.state_dict()
    out = DecoderImport(decoder, overrides)
    filled: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        target = next((rx.sub(repl, key) for rx, repl in RENAMES if rx.match(key)), None)
        if key.startswith("layers_prefix.") and not overrides["prefix_layers"]:
            out.unmapped[key] = NO_PREFIX
            continue
        if key.startswith(last) and target not in own:
            out.unmapped[key] = LAST_PREFIX
            continue
        if target is None:
            out.unmapped[key] = next((why for rx, why in REASONS if rx.search(key)), "unknown key")
            continue
        if target not in own or own[target].shape != tensor.shape:
            shape = tuple(own[target].shape) if target in own else None
            raise CheckpointError(f"Freeze-Omni key {key} {tuple(tensor.shape)} does not fit nar_ar's {target} {shape}: "
                                  "check heads / llm_hidden / model.json")
        filled[target] = tensor.to(own[target].dtype)
        out.mapped.append((key, target))
    decoder.load_state_dict(filled, strict=False)
    out.left_at_init = sorted(set(own) - set(filled))
    return out


def hydra_dict(values: dict[str, Any]) -> str:
    """``{a:1,b:split,c:false}``: a dict as a Hydra command-line value."""
    return "{" + ",".join(f"{k}:{json.dumps(v) if not isinstance(v, str) else v}" for k, v in values.items()) + "}"


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vita.interop.speech_decoder", description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="Freeze-Omni / VITA-1.5 checkpoint folder (with decoder/), decoder folder or final.pt")
    ap.add_argument("--out", required=True, help="safetensors file to write (model.speech.decoder_pretrained)")
    ap.add_argument("--llm-hidden", type=int, default=LLM_HIDDEN)
    ap.add_argument("--heads", type=int, default=None)
    ap.add_argument("--no-prefix", action="store_true",
                    help="drop the KV-prefix NAR (layers_prefix), as VITA-1.5's inference does")
    a = ap.parse_args(argv)
    from safetensors.torch import save_file

    got = load_freeze_omni_decoder(a.source, a.llm_hidden, a.heads, prefix=False if a.no_prefix else None)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in got.decoder.state_dict().items()}, a.out)
    print(got.report())
    print(f"wrote {a.out}; stage 3.2 from it: model.speech.decoder=nar_ar model.speech.decoder_pretrained={a.out} "
          f"'++model.speech.decoder_overrides={hydra_dict(got.overrides)}' (codec: {got.decoder.codebook_size} codes, "
          "1 codebook: TiCodec's shape)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
