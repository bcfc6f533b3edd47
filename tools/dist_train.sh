#!/usr/bin/env bash
# Multi-process training through torchrun: one process per GPU (NCCL), or per CPU worker (gloo)
# when no GPU is visible; tools/train.py picks the backend.
#   bash tools/dist_train.sh CONFIG NPROC [train.py arguments...]
# Several nodes: run it on every node with the same MASTER_ADDR/PORT and NNODES, and NODE_RANK
# 0..NNODES-1. Settings (environment, defaults in brackets):
#   NNODES [1]  NODE_RANK [0]  MASTER_ADDR [127.0.0.1]  PORT [29500]
#   PYTHON [.venv/bin/python of the repository if present, else python]
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: bash tools/dist_train.sh CONFIG NPROC [train.py arguments...]" >&2
  exit 2
fi
CONFIG=$1
NPROC=$2
shift 2
source "$(dirname "${BASH_SOURCE[0]}")/_torchrun.sh"
torchrun_launch "$NPROC" train.py "$CONFIG" --launcher pytorch "$@"
