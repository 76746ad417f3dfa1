"""``python -m vita.export SRC OUT``: merge a run's LoRA adapter into a full Hugging Face model;
``python -m vita.export RUN --format vita [OUT]``: write the whole model in VITA's layout.

``--format hf`` (default): SRC is an export folder (``<run dir>/final``) holding ``adapters/llm``;
OUT receives the merged LLM (``AutoModelForCausalLM`` loads it) and the tokenizer. The base
weights come from SRC, or, for a QLoRA run, from the unquantised base folder recorded in
the export meta file (:mod:`vita.artefacts`).

``--format vita``: RUN is a run dir or its ``final/``; OUT (default ``<RUN>/vita_format``) gets
VITA's ``config.json`` (``model_type`` vita-Qwen2 / vita-fo-Qwen2 / vita-mixtral), sharded
safetensors with VITA's key names + ``model.safetensors.index.json`` and the tokenizer files,
every LoRA adapter merged first (:mod:`vita.interop.exporter`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from vita.artefacts import read_export_meta, write_export_meta
from vita.errors import CheckpointError, one_line_errors


def merge_lora(src: Path, out: Path, dtype: torch.dtype = torch.float32) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vita.model.tokenizer_files import save_tokenizer

    meta = read_export_meta(src)
    adapter = src / meta.get("adapters", {}).get("llm", "adapters/llm")
    if not (adapter / "adapter_config.json").is_file():
        raise CheckpointError(f"{src} has no LLM adapter to merge ({adapter} missing): it is already a full model")
    base_dir = meta.get("base_model") or str(src)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    save_tokenizer(AutoTokenizer.from_pretrained(src), out)
    meta = {k: v for k, v in meta.items() if k not in ("adapters", "base_model")}
    write_export_meta(out, {**meta, "merged_from": str(src)})
    return out


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vita.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="export folder (a run's final/), or a run dir with --format vita")
    ap.add_argument("out", type=Path, nargs="?", help="output folder (--format vita: default <src>/vita_format)")
    ap.add_argument("--format", choices=("hf", "vita"), default="hf",
                    help="hf: merge the LLM's LoRA into an HF model; vita: the whole model in VITA's layout")
    ap.add_argument("--max-shard-size", default="5GB", help="--format vita: largest shard (default 5GB)")
    ap.add_argument("--dtype", default="auto", help="--format vita: auto (as stored), bfloat16, float16, float32")
    args = ap.parse_args(argv)

    if args.format == "vita":
        from vita.interop.exporter import export_vita
        from vita.interop.writer import parse_size
        from vita.model.builder import torch_dtype

        path = export_vita(args.src, args.out or args.src / "vita_format", parse_size(args.max_shard_size),
                           torch_dtype(args.dtype))
        print(f"VITA-layout model written to {path}")
        return 0
    if args.out is None:
        ap.error("the hf format needs OUT")
    path = merge_lora(args.src, args.out)
    print(f"merged model written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
