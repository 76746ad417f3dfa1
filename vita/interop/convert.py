"""``python -m vita.interop.convert VITA_DIR --out DIR``: a VITA folder -> a vita export
(``--check``: only print what vita makes of the folder).

The export (``DIR``) is what a vita run writes to ``<run>/final``: the LLM as a Hugging Face
folder (``AutoModelForCausalLM`` loads it), each other group as ``<group>.safetensors``, the
tokenizer and the export meta file (:mod:`vita.artefacts`). ``stage.init_from=DIR``, ``vita.chat`` and
``python -m vita.export DIR --format vita`` all read it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from vita.errors import one_line_errors


def convert(src: str | Path, out: str | Path, dtype: str = "auto", allow_bin: bool = False) -> Path:
    """Import the VITA folder ``src`` and write it as a vita export in ``out``; returns ``out``."""
    from vita.engine.export import export_model
    from vita.interop.importer import load_vita

    vm = load_vita(src, dtype=dtype, allow_bin=allow_bin)
    meta = {"step": 0, "stage": "vita-import", "template": vm.template,
            "model": OmegaConf.to_container(vm.imported.model, resolve=True), "init_from": f"vita:{Path(src).resolve()}",
            "not_honoured": vm.imported.not_honoured}
    out = Path(out)
    export_model(vm.model, vm.tokenizer, out, zero_stage=0, rank=0, meta=meta, copy=False)
    return out


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vita.interop.convert", description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="VITA whole-model folder (config.json + safetensors shards)")
    ap.add_argument("--out", type=Path, help="folder for the vita export")
    ap.add_argument("--dtype", default="auto", help="auto (as stored), float32, bfloat16 or float16")
    ap.add_argument("--allow-bin", action="store_true", help="accept pytorch_model*.bin (torch.load weights_only)")
    ap.add_argument("--check", action="store_true",
                    help="only say what vita makes of the folder (config.json + shard headers; no weights read)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check:
        from vita.interop.importer import compose_from_vita

        imported, wf = compose_from_vita(args.src, allow_bin=args.allow_bin)
        print(imported.summary())
        print(f"{len(wf.tensors)} tensors in {len(wf.files)} files, {wf.nbytes() / 2**30:.2f} GiB")
        print("as Hydra overrides: " + " ".join(imported.hydra_overrides()))
        return 0
    if args.out is None:
        ap.error("--out is required (or --check)")
    path = convert(args.src, args.out, args.dtype, args.allow_bin)
    print(f"vita export written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
