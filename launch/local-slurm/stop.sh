#!/usr/bin/env bash
# Stop the local cluster that start.sh started: cancel every job, then stop each daemon by its PID.
#   bash launch/local-slurm/stop.sh           # state (job ids, queue) is kept for the next start
#   bash launch/local-slurm/stop.sh --purge   # also delete the state dir and the generated slurm.conf
# Idempotent; munged is stopped only if start.sh started it. Nothing is stopped by name.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"
purge=0
[ "${1:-}" = "--purge" ] && purge=1

if alive slurmctld "$STATE/slurmctld.pid"; then
  jobs=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs 2>/dev/null || true
    wait_for 30 '[ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ]' \
      || log "jobs still listed after 30 s: $(timeout 5 squeue -h -o '%i %T' | tr '\n' ' ')"
  fi
fi
stop_daemon slurmd "$STATE/slurmd.pid"
stop_daemon slurmctld "$STATE/slurmctld.pid"
if [ -f "$STATE/munged.pid" ]; then
  stop_daemon munged "$STATE/munged.pid"
fi
left=$(ps -eo pid=,comm= | awk '$2 == "slurmstepd" {print $1}' | tr '\n' ' ')
[ -z "$left" ] || log "slurmstepd processes left (not stopped): $left"

if [ "$purge" = 1 ]; then
  rm -rf "$STATE"
  if [ -f "$CONF" ] && grep -q "$MARKER" "$CONF"; then rm -f "$CONF"; fi
fi
echo "local-slurm: stopped"
