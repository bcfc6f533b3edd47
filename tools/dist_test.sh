#!/usr/bin/env bash
# Multi-process evaluation through torchrun (NCCL on GPUs, gloo on CPUs; tools/test.py picks).
#   bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py arguments, e.g. --eval segm ray]
# Settings (environment, defaults in brackets):
#   NNODES [1]  NODE_RANK [0]  MASTER_ADDR [127.0.0.1]  PORT [29500]
#   PYTHON [.venv/bin/python of the repository if present, else python]
set -euo pipefail
if [ "$#" -lt 3 ]; then
  echo "usage: bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py arguments...]" >&2
  exit 2
fi
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
source "$(dirname "${BASH_SOURCE[0]}")/_torchrun.sh"
torchrun_launch "$NPROC" test.py "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
