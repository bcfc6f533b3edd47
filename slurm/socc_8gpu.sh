#!/usr/bin/env bash
# Per-node training script, started once per node by slurm/run_2_nodes.sh (srun). Builds gsplat's
# CUDA extension once on this node (under a lock, before torchrun: a clear error if it cannot),
# then runs torchrun with GPUS_PER_NODE processes (one per granted GPU; the original's 2 nodes x 4
# GPUs = 8 GPUs) and resumes from the latest checkpoint in WORK_DIR if there is one (a requeued
# job continues where it stopped). This checkout is put first on PYTHONPATH: the interpreter needs
# torch and mmengine, not `pip install -e .`.
#
# SIGTERM (a scheduler preempting the job signals every process of the step): the training
# processes checkpoint and stop on it (PreemptionHook); torchrun must not act on it, or it would
# kill them before they save. So torchrun starts with SIGTERM ignored and without its own handler
# for it (its --signals-to-handle, set through its PET_SIGNALS_TO_HANDLE; a torchrun without that
# option forwards SIGTERM to the workers and gives them 30 s); the training processes install
# theirs.
set -euo pipefail
: "${CONFIG:?}" "${WORK_DIR:?}" "${MASTER_ADDR:?}" "${MASTER_PORT:?}" "${NNODES:?}" "${GPUS_PER_NODE:?}"
NODE_RANK="${SLURM_NODEID:?run this through slurm/run_2_nodes.sh}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
echo "[socc_8gpu] node $(hostname)/${SLURMD_NODENAME:-?} rank $NODE_RANK of $NNODES: $GPUS_PER_NODE processes, ${SLURM_CPUS_PER_TASK:-?} CPUs"
if [ "${SOCC_BUILD_GSPLAT:-1}" = 1 ]; then
  "$PY" -m splattingocc.rendering.gsplat_build --if-cuda \
    || { echo "[socc_8gpu] node ${SLURMD_NODENAME:-$(hostname)}: gsplat could not be built (above); SOCC_BUILD_GSPLAT=0 skips this step for configs that do not render with gsplat" >&2; exit 1; }
fi
trap '' TERM
export PET_SIGNALS_TO_HANDLE="${PET_SIGNALS_TO_HANDLE:-SIGINT,SIGHUP,SIGQUIT}"
# shellcheck disable=SC2086
exec "$PY" -m torch.distributed.run \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$GPUS_PER_NODE" \
  --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
  "$REPO/tools/train.py" "$CONFIG" --work-dir "$WORK_DIR" --launcher pytorch --resume ${PY_ARGS:-}
