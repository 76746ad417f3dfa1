#!/usr/bin/env bash
# Start a real one-node SLURM cluster on this machine (Debian slurm-wlm + munge, no systemd), as root.
#   bash launch/local-slurm/start.sh      # idempotent: a running cluster with the same config is left alone
#   bash launch/local-slurm/stop.sh       # cancel jobs, stop the daemons by their PIDs (--purge: state too)
# The tests in tests/slurm call both. Settings (environment variables):
#   SLURM_LOCAL_STATE      state, spool, logs and pid files   (default: $TMPDIR/local-slurm)
#   SLURM_CONF             where the generated config goes    (default: /etc/slurm/slurm.conf)
#   SLURM_LOCAL_HOST       node name                          (default: hostname -s)
#   SLURM_LOCAL_CPUS       CPUs the node offers, may exceed nproc (default: max(nproc, 4))
#   SLURM_LOCAL_MEM_MB     node memory                        (default: 90% of MemTotal)
#   SLURM_LOCAL_PARTITION  the default partition              (default: debug)
#   SLURM_LOCAL_CTLD_PORT / SLURM_LOCAL_SLURMD_PORT           (default: 6817 / 6818)
#   SLURM_LOCAL_TIMEOUT    seconds to wait for the node to be idle (default: 60)
#   SLURM_LOCAL_NO_INSTALL=1  never apt-get install the packages
# Prints "local-slurm: started" or "local-slurm: already running" last; exits non-zero with the reason otherwise.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"

PACKAGES="slurmctld slurmd slurm-client munge"
CPUS=${SLURM_LOCAL_CPUS:-$(( $(nproc) > 4 ? $(nproc) : 4 ))}
MEM=${SLURM_LOCAL_MEM_MB:-$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)}
PARTITION=${SLURM_LOCAL_PARTITION:-debug}
CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-6818}
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}

[ "$(id -u)" = 0 ] || die "must run as root (the daemons and jobs run as root); try: sudo bash $0"

# 1. packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  [ "${SLURM_LOCAL_NO_INSTALL:-0}" = 1 ] && die "slurm/munge are not installed and SLURM_LOCAL_NO_INSTALL=1; run: apt-get install $PACKAGES"
  log "installing $PACKAGES"
  apt-get update -q >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PACKAGES >/dev/null \
    || die "apt-get install $PACKAGES failed"
fi

# 2. host name must resolve (to loopback is enough: everything talks over 127.0.0.1)
getent hosts "$HOST" >/dev/null || { echo "127.0.0.1 $HOST" >> /etc/hosts; log "added $HOST to /etc/hosts"; }

# 3. config: rendered to a temp file, installed only if it changed
mkdir -p "$STATE/ctld" "$STATE/slurmd" "$(dirname "$CONF")"
new=$(mktemp)
sed -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM@|$MEM|g" -e "s|@STATE@|$STATE|g" \
    -e "s|@PARTITION@|$PARTITION|g" -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
    "$HERE/slurm.conf.template" > "$new"
changed=0
if [ -e "$CONF" ] && ! grep -q "$MARKER" "$CONF"; then
  rm -f "$new"; die "$CONF exists and was not written by this script; move it away or set SLURM_CONF"
fi
if ! cmp -s "$new" "$CONF" 2>/dev/null; then install -m 0644 "$new" "$CONF"; changed=1; fi
rm -f "$new"

# 4. munge: use a running munged if it answers; else start our own (its pid file marks it as ours)
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key 2>/dev/null \
    || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid || die "munged did not start"
  cp /run/munge/munged.pid "$STATE/munged.pid"
  wait_for 10 "munge -n | unmunge >/dev/null 2>&1" || die "munged started but munge -n | unmunge fails"
fi

# 5. the two SLURM daemons; restarted if the config changed
running=0
if alive slurmctld "$STATE/slurmctld.pid" && alive slurmd "$STATE/slurmd.pid"; then running=1; fi
if [ "$running" = 1 ] && [ "$changed" = 0 ]; then
  echo "local-slurm: already running ($CONF, state $STATE)"
  exit 0
fi
if [ "$running" = 1 ]; then log "config changed: restarting the daemons"; fi
stop_daemon slurmd "$STATE/slurmd.pid"
stop_daemon slurmctld "$STATE/slurmctld.pid"
slurmctld -f "$CONF" -i || die "slurmctld did not start; see $STATE/slurmctld.log"
wait_for 20 "timeout 5 scontrol ping 2>/dev/null | grep -q UP" || die "slurmctld does not answer; see $STATE/slurmctld.log"
slurmd -f "$CONF" -N "$HOST" || die "slurmd did not start; see $STATE/slurmd.log"

# 6. wait for the node; resume it once if it comes up down or drained
resumed=0
deadline=$(( SECONDS + TIMEOUT ))
while :; do
  state=$(timeout 5 sinfo -h -n "$HOST" -o %T 2>/dev/null | head -1 || true)
  case "$state" in
    idle|mixed|allocated|completing) break ;;
    down*|drain*|drained*)
      if [ "$resumed" = 0 ]; then timeout 5 scontrol update nodename="$HOST" state=resume || true; resumed=1; fi ;;
  esac
  if [ "$SECONDS" -ge "$deadline" ]; then
    timeout 5 scontrol show node "$HOST" || true
    tail -n 20 "$STATE/slurmctld.log" "$STATE/slurmd.log" || true
    die "node $HOST is '${state:-unknown}' after ${TIMEOUT}s, not idle (logs above)"
  fi
  sleep 0.2
done
echo "local-slurm: started ($CONF, node $HOST with $CPUS CPUs, partition $PARTITION, state $STATE)"
