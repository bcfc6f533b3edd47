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
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python; fi
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}

PYTHONPATH="$REPO:${PYTHONPATH:-}" exec "$PYTHON" -m torch.distributed.run \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
  --master_port="$PORT" --nproc_per_node="$NPROC" \
  "$REPO/tools/train.py" "$CONFIG" --launcher pytorch "$@"
