"""``python -m vita.model.summary model=<name> [overrides]``: parameter count per component.

The model is built on the meta device from its config, so no weights are read and no memory
is used; ``pretrained`` paths are ignored (shapes come from the registry entries).

A model that speaks (``model.speech.decoder`` set) gets a ``speech decoder`` row: the decoder is built from
``SPEECH_DECODERS`` with the LLM's hidden size and the codec's codebooks (the codec is built from
``model.speech.codec``; without one, VITA-1.5's codec shape, 1 x 1,024, is assumed and said). VITA-1.5's
decoder size: ``python -m vita.model.summary model=vita15_qwen2p5_7b model.speech.decoder=vita15``.
"""

from __future__ import annotations

import sys

import torch
from omegaconf import OmegaConf

from vita.model.builder import build_model, count_params

ROWS = (("llm", "LLM"), ("vision_tower", "vision tower"), ("vision_projector", "vision projector"),
        ("audio_encoder", "audio encoder"), ("audio_projector", "audio projector"), ("heads", "heads"),
        ("speech_decoder", "speech decoder"))
VITA15_CODEC = (1, 1024)
"""Codebooks x codebook size assumed when a speech decoder is given without a codec (VITA-1.5's TiCodec)."""


def speech_decoder_for(speech_cfg, llm_hidden: int) -> torch.nn.Module:
    """The speech decoder of ``cfg.model.speech`` (built where called: use the meta device)."""
    from vita.registry import SPEECH_CODECS, SPEECH_DECODERS, load_builtins

    load_builtins()
    if speech_cfg.codec:
        codec = SPEECH_CODECS.build(speech_cfg.codec, **({"path": speech_cfg.codec_path} if speech_cfg.codec_path else {}),
                                    **dict(speech_cfg.codec_options or {}))
        shape = (codec.codebooks, codec.codebook_size)
    else:
        shape = VITA15_CODEC
    decoder = SPEECH_DECODERS.build(speech_cfg.decoder, llm_hidden=llm_hidden, codebooks=shape[0],
                                    codebook_size=shape[1], **dict(speech_cfg.decoder_overrides or {}))
    return decoder


def summarize(model_cfg) -> dict[str, int]:
    """Component -> parameter count (meta device, registry shapes, pretrained weights not read)."""
    from vita.registry import load_builtins

    load_builtins()
    cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=False))
    cfg.pretrained = None
    cfg.gguf_file = None
    cfg.vision.pretrained = cfg.vision.projector_pretrained = None
    cfg.audio.pretrained = cfg.audio.projector_pretrained = None
    speech = OmegaConf.create(OmegaConf.to_container(cfg.speech)) if cfg.get("speech") is not None else None
    if speech is not None:
        cfg.speech.decoder_pretrained = speech.decoder_pretrained = None
        if speech.get("decoder") and not speech.get("codec"):
            cfg.speech.decoder = None          # counted below with the assumed codec shape
    with torch.device("meta"):
        model = build_model(cfg)
    groups = model.module_groups()
    counts = {key: count_params(groups.get(key)) for key, _ in ROWS if key in groups}
    counts["total"] = count_params(model)
    decoder = groups.get("speech_decoder")
    if decoder is None and speech is not None and speech.get("decoder"):
        with torch.device("meta"):
            decoder = speech_decoder_for(speech, model.llm.config.get_text_config().hidden_size)
        counts["speech_decoder"] = count_params(decoder)
        counts["total"] += counts["speech_decoder"]
    if decoder is not None and hasattr(decoder, "part_sizes"):
        counts.update({f"speech_decoder.{k}": v for k, v in decoder.part_sizes().items()})
    return counts


def format_table(name: str, counts: dict[str, int]) -> str:
    lines = [f"model={name}", f"{'component':<18}{'parameters':>16}{'':>10}"]
    for key, label in ROWS:
        if key in counts:
            lines.append(f"{label:<18}{counts[key]:>16,}{counts[key] / 1e6:>9.1f}M")
        for part in (k for k in counts if k.startswith(key + ".")):
            label2 = "  " + part.split(".", 1)[1].upper()
            lines.append(f"{label2:<18}{counts[part]:>16,}{counts[part] / 1e6:>9.1f}M")
    lines.append(f"{'total':<18}{counts['total']:>16,}{counts['total'] / 1e6:>9.1f}M")
    return "\n".join(lines)


def compose_model(overrides: list[str]):
    """The config of a command line (``--config-dir`` and search paths honoured, as for ``vita.run``)."""
    from vita.cli import compose_cli

    return compose_cli(overrides, resolve=False)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    cfg = compose_model(args)
    name = next((a.split("=", 1)[1] for a in args if a.startswith("model=")), "default")
    print(format_table(name, summarize(cfg.model)))
    speech = cfg.model.get("speech")
    if speech is not None and speech.get("decoder") and not speech.get("codec"):
        print(f"(speech decoder: no model.speech.codec set, {VITA15_CODEC[0]} x {VITA15_CODEC[1]:,} codes assumed, "
              "as VITA-1.5's codec)")


if __name__ == "__main__":
    main()
