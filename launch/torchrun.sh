#!/usr/bin/env bash
# Data-parallel training with torchrun on one node (or several: set NNODES, NODE_RANK, MASTER_ADDR).
#   NPROC=2 launch/torchrun.sh experiment=smoke engine=zero2
# Every rank composes the same config and agrees on one run dir; re-running resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
exec "$(dirname "$PY")/torchrun" \
  --nproc_per_node "${NPROC:-2}" --nnodes "${NNODES:-1}" --node_rank "${NODE_RANK:-0}" \
  --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29500}" \
  -m vita.run "$@"
