#!/usr/bin/env bash
# SplattingOcc on a Slurm allocation of 2 nodes: one torchrun per node, started with srun.
#
#   CONFIG=configs/splattingocc/splattingocc-Nframe.py WORK_DIR=work_dirs/socc sbatch slurm/run_2_nodes.sh
#   RUN=slurm/test.sh CONFIG=... CHECKPOINT=work_dirs/socc/epoch_24.pth sbatch slurm/run_2_nodes.sh
#
# Submit from the repository root. Partition, account and QoS are not set here: give them on the
# sbatch command line (-p, -A, -q) or through SBATCH_PARTITION / SBATCH_ACCOUNT / SBATCH_QOS.
# Environment (sbatch passes the submitting shell's environment on):
#   RUN            per-node script (default slurm/socc_8gpu.sh = training; slurm/test.sh = evaluation)
#   CONFIG         config file (required)
#   WORK_DIR       work directory (default work_dirs/<config name>)
#   GPUS_PER_NODE  processes per node (default 4; on nodes without GPUs they run on CPUs with gloo)
#   CHECKPOINT     checkpoint to evaluate (slurm/test.sh)
#   PY_ARGS        extra arguments for tools/train.py or tools/test.py
#   MASTER_PORT    rendezvous port (default 20000 + job id % 20000)
#   PYTHON         interpreter (default .venv/bin/python if present, else python3)
# CPU-only clusters: `sbatch --gpus-per-node=0 ...` (GPUS_PER_NODE processes per node, gloo).
# Preemption: Slurm sends USR1 to this script 120 s before the time limit (--signal below; change
# it with `sbatch --signal=B:USR1@300`; `scancel --signal=USR1 --batch JOBID` does the same by
# hand). The script touches WORK_DIR/.preempt-request; splattingocc.engine.PreemptionHook (in the
# config's custom_hooks) saves a checkpoint at the next iteration boundary, writes
# WORK_DIR/.preempt-saved and stops training; the job then requeues itself and the requeued job
# resumes from WORK_DIR (--resume). Slurm delays a requeued job by about 2 minutes (BeginTime).
# Epoch-based schedules need train_cfg.type='PreemptibleEpochBasedTrainLoop' to stop mid-epoch.
# The signal must go to this script only (B:): torchrun and data loader workers are not meant to
# receive it.
#SBATCH --job-name=splattingocc
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --time=72:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

# a USR1 before the handler below is set would end the job: note it and act on it later
preempted=0
trap 'preempted=1' USR1

REPO="${REPO:-${SLURM_SUBMIT_DIR:-$(pwd)}}"
cd "$REPO"
[ -f tools/train.py ] || { echo "run_2_nodes.sh: $REPO is not the SplattingOcc repository: submit from its root (or set REPO)" >&2; exit 2; }
: "${CONFIG:?set CONFIG=path/to/config.py}"
[ -f "$CONFIG" ] || { echo "run_2_nodes.sh: config '$CONFIG' not found (relative to $REPO)" >&2; exit 2; }
export RUN="${RUN:-slurm/socc_8gpu.sh}"
[ -f "$RUN" ] || { echo "run_2_nodes.sh: RUN script '$RUN' not found" >&2; exit 2; }
export CONFIG
export WORK_DIR="${WORK_DIR:-work_dirs/$(basename "${CONFIG%.py}")}"
case "$WORK_DIR" in /*) ;; *) WORK_DIR="$REPO/$WORK_DIR" ;; esac  # absolute: flag files below
export GPUS_PER_NODE="${GPUS_PER_NODE:-4}"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHON
first_node="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
# the node's address as the cluster knows it (NodeAddr; equals the node name on most clusters)
addr="$(scontrol show node "$first_node" | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p')"
export MASTER_ADDR="${MASTER_ADDR:-${addr:-$first_node}}"
export MASTER_PORT="${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID} % 20000))}"
export NNODES="$SLURM_JOB_NUM_NODES"
mkdir -p "$WORK_DIR"
# the request file splattingocc.engine.PreemptionHook watches, and the file it writes once the
# preemption checkpoint is complete (its iteration)
export SOCC_PREEMPT_FLAG="$WORK_DIR/.preempt-request"
SAVED="$WORK_DIR/.preempt-saved"
rm -f "$SOCC_PREEMPT_FLAG" "$SAVED"

echo "[run_2_nodes] job ${SLURM_JOB_ID} (restart ${SLURM_RESTART_COUNT:-0}) nodes: $(scontrol show hostnames "$SLURM_JOB_NODELIST" | tr '\n' ' ')"
echo "[run_2_nodes] RUN=$RUN CONFIG=$CONFIG WORK_DIR=$WORK_DIR GPUS_PER_NODE=$GPUS_PER_NODE master=$MASTER_ADDR:$MASTER_PORT"

on_usr1() {
  echo "[run_2_nodes] USR1 received: asking training to checkpoint and stop"
  preempted=1
  touch "$SOCC_PREEMPT_FLAG"
}
trap on_usr1 USR1
[ "$preempted" = 1 ] && on_usr1  # the signal came during the set-up above

srun --ntasks-per-node=1 --kill-on-bad-exit=1 bash "$RUN" &
step=$!
rc=0
while true; do
  wait "$step" && rc=0 || rc=$?
  kill -0 "$step" 2>/dev/null || break  # wait was interrupted by the signal: keep waiting
done

if [ "$preempted" = 1 ] && [ -f "$SAVED" ]; then
  echo "[run_2_nodes] checkpoint saved at iteration $(cat "$SAVED"); requeueing job ${SLURM_JOB_ID}"
  rm -f "$SOCC_PREEMPT_FLAG"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
echo "[run_2_nodes] finished with exit code $rc"
exit "$rc"
