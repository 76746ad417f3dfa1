#!/usr/bin/env bash
# One GPU: tokens/s and MFU of a Qwen2.5-0.5B-shaped LLM + InternViT-300M-shaped tower (random init,
# bf16, DeepSpeed ZeRO-2), packing off vs on, on a synthetic VITA-format image/text set. One table.
#   launch/gpu_bench.sh                      # ~4-6 minutes on an H100/H200
#   PEAK_TFLOPS=312 launch/gpu_bench.sh      # A100 bf16 dense peak for the MFU column
#   launch/gpu_bench.sh --steps 40 --micro-batch 4   # extra flags go to python -m vita.bench.gpu
# SMOKE=1 runs the same path with tiny models on CPU (checks the script; its figures mean nothing).
# What is measured and how: vita/bench/gpu.py. Not yet run on a GPU in this repository (see docs/BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
args=(--peak-tflops "${PEAK_TFLOPS:-989}")
if [[ "${SMOKE:-0}" == 1 ]]; then args+=(--smoke); fi
exec timeout "${TIMEOUT_S:-480}" "$PY" -m vita.bench.gpu "${args[@]}" "$@"
