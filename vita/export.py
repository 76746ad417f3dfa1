"""``python -m vita.export SRC OUT``: merge a run's LoRA adapter into a full Hugging Face model.

SRC is an export folder (``<run dir>/final``) holding ``adapters/llm``; OUT receives the merged
LLM (``AutoModelForCausalLM`` loads it) and the tokenizer. The base weights come from SRC, or,
for a QLoRA run, from the unquantised base folder recorded in ``vita_export.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from vita.errors import CheckpointError


def merge_lora(src: Path, out: Path, dtype: torch.dtype = torch.float32) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta_file = src / "vita_export.json"
    if not meta_file.is_file():
        raise CheckpointError(f"{src} is not a vita export (no vita_export.json); pass <run dir>/final")
    meta = json.loads(meta_file.read_text())
    adapter = src / meta.get("adapters", {}).get("llm", "adapters/llm")
    if not (adapter / "adapter_config.json").is_file():
        raise CheckpointError(f"{src} has no LLM adapter to merge ({adapter} missing): it is already a full model")
    base_dir = meta.get("base_model") or str(src)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    meta = {k: v for k, v in meta.items() if k not in ("adapters", "base_model")}
    (out / "vita_export.json").write_text(json.dumps({**meta, "merged_from": str(src)}, indent=1))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vita.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="export folder with adapters/llm (a run's final/)")
    ap.add_argument("out", type=Path, help="folder for the merged model")
    args = ap.parse_args(argv)
    try:
        path = merge_lora(args.src, args.out)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"merged model written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
