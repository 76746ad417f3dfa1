"""Build DeepSpeed's fused Adam (a CUDA op, JIT-compiled) once, before the checks and the benchmark use it.

    python launch/device/ops.py OUT_FILE

Writes ``fused`` to OUT_FILE when the op builds and loads on this GPU (the engine's ``optimizer_impl=auto``
then uses it), else ``torch`` (torch's AdamW: the figures stay comparable, the optimizer step is slower);
the build's log goes to stdout. Without CUDA (the kit's CPU smoke mode) nothing is built: ``torch``.
The kit ships DeepSpeed with no compiled ops (DS_BUILD_OPS=0, launch/device/prepare.sh), so this is where
nvcc runs, for this GPU's architecture alone (TORCH_CUDA_ARCH_LIST), into torch's extension cache.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main(out: Path) -> int:
    import torch

    impl = "torch"
    if not torch.cuda.is_available():
        print("no CUDA device: DeepSpeed's fused Adam is not built; the optimizer is torch's AdamW")
    else:
        major, minor = torch.cuda.get_device_capability(0)
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}")
        print(f"building DeepSpeed's fused Adam for {torch.cuda.get_device_name(0)} "
              f"(TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']})", flush=True)
        t0 = time.perf_counter()
        try:
            from deepspeed.ops.op_builder import FusedAdamBuilder

            FusedAdamBuilder().load(verbose=True)
            impl = "fused"
            print(f"fused Adam built and loaded in {time.perf_counter() - t0:.0f} s")
        except Exception as e:  # noqa: BLE001 - any build failure means: fall back, and say why
            print(f"fused Adam did not build ({type(e).__name__}: {e}); the optimizer is torch's AdamW")
    out.write_text(impl + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
