#!/usr/bin/env bash
# A Slurm job array that generates one dataset in N parts, one task per part, without MPI
# (docs/scaling.md). Submit with `sbatch examples/cluster/slurm-array.sh`, then merge:
#
#   target/release/varphi data darcy --n 40000 --seed 7 \
#     --merge parts/darcy-0.npz,parts/darcy-1.npz,...,parts/darcy-7.npz -o darcy-40000.npz
#
# The merged archive is byte-identical to the one a single `varphi data darcy --n 40000
# --seed 7 -o ...` writes: every sample has its own random stream.
#SBATCH --job-name=varphi-data
#SBATCH --array=0-7
#SBATCH --cpus-per-task=8
#SBATCH --time=01:00:00
set -euo pipefail
N=8
mkdir -p parts
target/release/varphi data darcy --n 40000 --seed 7 --threads "${SLURM_CPUS_PER_TASK:-8}" -q \
  --shard "${SLURM_ARRAY_TASK_ID}/${N}" -o "parts/darcy-${SLURM_ARRAY_TASK_ID}.npz"
