#!/usr/bin/env bash
# sbatch + torchrun: one srun task per node, and torchrun starts one process per GPU on it
# (ranks come from torchrun; the rendezvous is on the job's first node, port derived from the job id).
#   NPROC=8 sbatch --nodes=2 --gpus-per-node=8 --partition=gpu launch/sbatch_torchrun.sh experiment=...
# Time limit: SLURM sends SIGUSR2 to this script 120 s before the end; the trap below requeues the
# job, SLURM sends SIGTERM to every process, each vita rank finishes its step, saves a checkpoint and
# exits (within KillWait, or the previous checkpoint is used), and the requeued job resumes.
#SBATCH --job-name=vita-torchrun
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR2@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
PY=${PY:-.venv/bin/python}
NPROC=${NPROC:-${SLURM_GPUS_ON_NODE:-1}}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=$(( 15000 + SLURM_JOB_ID % 5000 ))
trap 'echo "SIGUSR2: time limit near, requeueing job $SLURM_JOB_ID"; scontrol requeue "$SLURM_JOB_ID"' USR2
srun --kill-on-bad-exit=1 "$(dirname "$PY")/torchrun" --nnodes "$SLURM_NNODES" --nproc_per_node "$NPROC" \
  --rdzv_backend c10d --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv_id "$SLURM_JOB_ID" \
  -m vita.run "$@" &
pid=$!
rc=0; wait "$pid" || rc=$?
if kill -0 "$pid" 2>/dev/null; then rc=0; wait "$pid" || rc=$?; fi   # the trap interrupted the first wait
exit "$rc"
