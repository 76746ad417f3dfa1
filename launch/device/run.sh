#!/usr/bin/env bash
# The device kit's one call: on a lent GPU machine (bare image, no network), from the repo root, with the kit of
# launch/device/prepare.sh in .whl/ (carried). Everything it writes goes to $OUT (at most 8 files come back):
#   kit.log      install of the kit, the environment, DeepSpeed's fused-Adam build
#   tests.log    pytest -m gpu tests/test_gpu_checks.py -v     tests.xml   its JUnit report
#   bench.log    launch/gpu_bench.sh (vita.bench.gpu)          bench.json  its figures (rewritten after each arm)
#   parts.jsonl  one line per part: budget, seconds, exit code, timed_out
#   SUMMARY.md   the table for docs/BENCHMARKS.md (launch/device/summary.py)
# Each part runs under its own budget (coreutils timeout; VITA_DEVICE_BUDGET_<PART>=seconds overrides) and the
# next part runs whatever the last one did; the default budgets add up to 8 minutes (docs/DEVICE.md).
#   bash launch/device/run.sh                        # there: OUT is set by the device tool
#   VITA_DEVICE_SMOKE=1 bash launch/device/run.sh    # here, on CPU: every part, tiny models, the same files
# VITA_PY: the interpreter (default python3: the image's, with its torch). VITA_DEVICE_PARTS: the parts to run.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
SMOKE=${VITA_DEVICE_SMOKE:-0}
PY=${VITA_PY:-python3}
KIT=${VITA_KIT:-.whl}
WORK=${VITA_DEVICE_WORK:-/tmp/vita-device}
OUT=${OUT:-$REPO/outputs/device$([[ $SMOKE == 1 ]] && echo -smoke)}
PARTS=${VITA_DEVICE_PARTS:-install ops tests bench summary}
if [[ $SMOKE == 1 ]]; then  # CPU: generous against a loaded 2-core machine, still bounded
  declare -A BUDGET=([install]=120 [ops]=60 [tests]=600 [bench]=480 [summary]=30)
  export CUDA_VISIBLE_DEVICES="" VITA_DEVICE_SMOKE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else  # one GPU: 45 + 75 + 120 + 225 + 15 = 480 s
  declare -A BUDGET=([install]=45 [ops]=75 [tests]=120 [bench]=225 [summary]=15)
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
fi
for p in "${!BUDGET[@]}"; do
  v=VITA_DEVICE_BUDGET_${p^^}
  BUDGET[$p]=${!v:-${BUDGET[$p]}}
done
mkdir -p "$OUT" "$WORK"
rm -f "$OUT"/{kit.log,tests.log,tests.xml,bench.log,bench.json,parts.jsonl,SUMMARY.md}
SITE=$WORK/site
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
  TOKENIZERS_PARALLELISM=false WANDB_MODE=offline PYTHONDONTWRITEBYTECODE=1
# DeepSpeed's JIT-built ops (fused Adam there; its shared-memory comm op on CPU) are cached per source path:
# their own cache beside the kit's install, so that another DeepSpeed on this machine never forces a rebuild
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$WORK/torch_extensions}

# part NAME LOG CMD...: run CMD under NAME's budget, its output appended to $OUT/LOG (and shown), one line to
# parts.jsonl. A part over budget gets SIGTERM, then SIGKILL 5 s later (its whole process group).
part() {
  local name=$1 log=$2 start end rc
  shift 2
  if [[ " $PARTS " != *" $name "* ]]; then return 0; fi
  echo "=== $name (budget ${BUDGET[$name]} s)" | tee -a "$OUT/$log"
  start=$EPOCHREALTIME
  timeout -k 5 "${BUDGET[$name]}" "$@" 2>&1 | tee -a "$OUT/$log"
  rc=${PIPESTATUS[0]}
  end=$EPOCHREALTIME
  printf '{"part": "%s", "budget_s": %s, "seconds": %s, "rc": %d, "timed_out": %s, "log": "%s"}\n' "$name" \
    "${BUDGET[$name]}" "$(awk "BEGIN {printf \"%.1f\", $end - $start}")" "$rc" \
    "$([[ $rc == 124 || $rc == 137 ]] && echo true || echo false)" "$log" >> "$OUT/parts.jsonl"
  [[ $rc == 0 ]] || status=1
  return "$rc"
}

install_kit() {
  if [[ ! -f $KIT/MANIFEST.txt ]]; then
    echo "$KIT/MANIFEST.txt is missing: run launch/device/prepare.sh here first and carry .whl (docs/DEVICE.md)"
    return 2
  fi
  local wheels stamp
  wheels=$("$PY" launch/device/kit.py installable --kit "$KIT") || return 2
  stamp="$("$PY" -c 'import sys; print(sys.version)'; cat "$KIT/MANIFEST.txt")"
  if [[ -f $SITE/.kit-stamp && "$(cat "$SITE/.kit-stamp")" == "$stamp" ]]; then
    echo "the kit is already installed in $SITE"  # a re-run on a warm machine; JIT-built ops stay valid too
  else
    echo "installing $(echo "$wheels" | wc -l) of the kit's $(ls "$KIT"/*.whl | wc -l) wheels into $SITE"
    rm -rf "$SITE"
    # shellcheck disable=SC2086
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" $wheels ||
      return 2
    echo "$stamp" > "$SITE/.kit-stamp"
  fi
  "$PY" launch/device/kit.py check --site "$SITE"
}
export -f install_kit  # timeout runs it in a child bash
export PY KIT SITE

status=0
if part install kit.log bash -c install_kit; then
  part ops kit.log "$PY" launch/device/ops.py "$WORK/optimizer_impl"
  export VITA_DEVICE_OPTIMIZER_IMPL=$(cat "$WORK/optimizer_impl" 2>/dev/null || echo torch)
  part tests tests.log "$PY" -m pytest -p no:cacheprovider -m gpu tests/test_gpu_checks.py -v -rA \
    --timeout "$(( BUDGET[tests] * 3 / 4 ))" --junitxml "$OUT/tests.xml" -o junit_family=xunit2
  bench=(--budget-s "$(( BUDGET[bench] - 15 ))" --optimizer-impl "$VITA_DEVICE_OPTIMIZER_IMPL" --out "$OUT/bench.json")
  if [[ $SMOKE != 1 ]]; then bench+=(--steps 40 --skip 10); fi
  part bench bench.log env PY="$PY" SMOKE="$SMOKE" TIMEOUT_S="${BUDGET[bench]}" bash launch/gpu_bench.sh "${bench[@]}"
else
  echo "the kit did not install: no further part runs (see $OUT/kit.log)"
fi
part summary kit.log "$PY" launch/device/summary.py "$OUT"
[[ -f $OUT/SUMMARY.md ]] && cat "$OUT/SUMMARY.md"
exit "$status"
