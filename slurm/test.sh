#!/usr/bin/env bash
# Per-node evaluation script for slurm/run_2_nodes.sh (RUN=slurm/test.sh): tools/test.py on every
# process of every node; results are collected on the CPU and every sample counted exactly once.
# This checkout is put first on PYTHONPATH (no `pip install -e .` needed). No rendering at test
# time, so no gsplat build.
set -euo pipefail
: "${CONFIG:?}" "${MASTER_ADDR:?}" "${MASTER_PORT:?}" "${NNODES:?}" "${GPUS_PER_NODE:?}"
: "${CHECKPOINT:?set CHECKPOINT=path/to/checkpoint.pth for slurm/test.sh}"
NODE_RANK="${SLURM_NODEID:?run this through slurm/run_2_nodes.sh}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
echo "[test] node $(hostname)/${SLURMD_NODENAME:-?} rank $NODE_RANK of $NNODES: $GPUS_PER_NODE processes, ${SLURM_CPUS_PER_TASK:-?} CPUs"
# shellcheck disable=SC2086
exec "${PYTHON:-python3}" -m torch.distributed.run \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$GPUS_PER_NODE" \
  --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
  "$REPO/tools/test.py" "$CONFIG" "$CHECKPOINT" --eval segm --work-dir "${WORK_DIR}" --launcher pytorch ${PY_ARGS:-}
