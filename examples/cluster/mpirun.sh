#!/usr/bin/env bash
# Data-parallel training, data generation and Bayes-VI cases over MPI ranks (docs/scaling.md).
#
# Build once with MPI (OpenMPI or MPICH development files and libclang are needed):
#   cargo build --release --features varphi-train/mpi
# then run this script from the repository root, e.g. `bash examples/cluster/mpirun.sh 4`.
set -euo pipefail
RANKS=${1:-2}
VARPHI=${VARPHI:-target/release/varphi}
# One CPU thread per rank when the ranks share a machine; on separate nodes leave it unset.
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}

# 1. One model, data-parallel: each rank evaluates 1/RANKS of every batch, gradients are
#    summed by one all-reduce per step; rank 0 writes runs/darcy-forward-unet-mpi.
mpirun -n "$RANKS" -x RAYON_NUM_THREADS "$VARPHI" train configs/darcy-forward-unet.toml \
  --mpi --out runs/darcy-forward-unet-mpi
# Resume after a stop (or a killed rank) on any number of ranks:
#   mpirun -n "$RANKS" "$VARPHI" train --mpi --resume runs/darcy-forward-unet-mpi

# 2. A dataset, the samples split over the ranks; the archive is byte-identical to one
#    process's.
mpirun -n "$RANKS" "$VARPHI" data darcy --n 4000 -o darcy-4000.npz

# 3. Independent Bayes-VI cases, case c on rank c mod RANKS; rank 0 writes the files.
mpirun -n "$RANKS" "$VARPHI" infer configs/darcy-bayes-vi.toml --out runs/darcy-bayes-vi-mpi
