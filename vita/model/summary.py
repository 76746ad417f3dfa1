"""``python -m vita.model.summary model=<name> [overrides]``: parameter count per component.

The model is built on the meta device from its config, so no weights are read and no memory
is used; ``pretrained`` paths are ignored (shapes come from the registry entries).
"""

from __future__ import annotations

import sys

import torch
from omegaconf import OmegaConf

from vita.model.builder import build_model, count_params

ROWS = (("llm", "LLM"), ("vision_tower", "vision tower"), ("vision_projector", "vision projector"),
        ("audio_encoder", "audio encoder"), ("audio_projector", "audio projector"), ("heads", "heads"))


def summarize(model_cfg) -> dict[str, int]:
    """Component -> parameter count (meta device, registry shapes, pretrained weights not read)."""
    cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=False))
    cfg.pretrained = None
    cfg.gguf_file = None
    cfg.vision.pretrained = cfg.vision.projector_pretrained = None
    cfg.audio.pretrained = cfg.audio.projector_pretrained = None
    with torch.device("meta"):
        model = build_model(cfg)
    groups = model.module_groups()
    counts = {key: count_params(groups.get(key)) for key, _ in ROWS if key in groups}
    counts["total"] = count_params(model)
    return counts


def format_table(name: str, counts: dict[str, int]) -> str:
    lines = [f"model={name}", f"{'component':<18}{'parameters':>16}{'':>10}"]
    for key, label in ROWS:
        if key in counts:
            lines.append(f"{label:<18}{counts[key]:>16,}{counts[key] / 1e6:>9.1f}M")
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


if __name__ == "__main__":
    main()
