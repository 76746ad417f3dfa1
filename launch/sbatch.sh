#!/usr/bin/env bash
# Plain sbatch + srun, without submitit: one task per GPU. Each task's rank, local rank and world
# size come from SLURM (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS), the master address is the first
# node of the job and the port is derived from the job id (vita/engine/distributed.py).
#   sbatch launch/sbatch.sh experiment=smoke optim.lr=1e-3
#   sbatch --nodes=4 --ntasks-per-node=8 --gpus-per-node=8 --partition=gpu launch/sbatch.sh experiment=...
# Time limit: SLURM sends SIGUSR2 120 s before the end (--signal); vita finishes its step, saves a
# checkpoint and runs `scontrol requeue`; the requeued job runs this script again and resumes in the
# same run dir (outputs/<name>/<overrides>). Resubmitting the same command also resumes.
#SBATCH --job-name=vita
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=4
#SBATCH --time=24:00:00
#SBATCH --signal=USR2@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"   # the batch script runs from a copy in SLURM's spool; the repo is where sbatch ran
PY=${PY:-.venv/bin/python}
exec srun --kill-on-bad-exit=1 "$PY" -m vita.run "$@"
