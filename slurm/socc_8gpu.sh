#!/usr/bin/env bash
# Per-node training script, started once per node by slurm/run_2_nodes.sh (srun). Runs torchrun
# with GPUS_PER_NODE processes (the original's 2 nodes x 4 GPUs = 8 GPUs) and resumes from the
# latest checkpoint in WORK_DIR if there is one (a requeued job continues where it stopped).
set -euo pipefail
: "${CONFIG:?}" "${WORK_DIR:?}" "${MASTER_ADDR:?}" "${MASTER_PORT:?}" "${NNODES:?}"
NODE_RANK="${SLURM_NODEID:?run this through slurm/run_2_nodes.sh}"
echo "[socc_8gpu] node $(hostname)/${SLURMD_NODENAME:-?} rank $NODE_RANK of $NNODES: $GPUS_PER_NODE processes"
# shellcheck disable=SC2086
exec "${PYTHON:-python3}" -m torch.distributed.run \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$GPUS_PER_NODE" \
  --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
  tools/train.py "$CONFIG" --work-dir "$WORK_DIR" --launcher pytorch --resume ${PY_ARGS:-}
