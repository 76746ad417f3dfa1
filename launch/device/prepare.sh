#!/usr/bin/env bash
# Build the device kit here (CPU, network to PyPI): the wheels the lent GPU image lacks, for CPython 3.12
# manylinux x86-64, into .whl/ (ignored), with .whl/MANIFEST.txt (sizes; kit + travelling tree <= 60 MiB).
#   launch/device/prepare.sh                 # versions from .venv (the ones vita's tests pass with)
#   PY=/path/to/python KIT=.whl LIMIT_MIB=60 launch/device/prepare.sh
# Then a session with a device runs launch/device/run.sh there in one call (docs/DEVICE.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
exec "$PY" launch/device/kit.py prepare --kit "${KIT:-.whl}" --limit-mib "${LIMIT_MIB:-60}"
