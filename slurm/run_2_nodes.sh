#!/usr/bin/env bash
# SplattingOcc on a Slurm allocation of 2 nodes: one torchrun per node, started with srun.
#
#   CONFIG=configs/splattingocc/splattingocc-Nframe.py WORK_DIR=work_dirs/socc sbatch slurm/run_2_nodes.sh
#   RUN=slurm/test.sh CONFIG=... CHECKPOINT=work_dirs/socc/epoch_12.pth sbatch slurm/run_2_nodes.sh
#
# Submit from the repository root. Partition, account and QoS are not set here: give them on the
# sbatch command line (-p, -A, -q) or through SBATCH_PARTITION / SBATCH_ACCOUNT / SBATCH_QOS.
#
# Resources per node (the #SBATCH lines below; options on the sbatch line override them):
#   --gpus-per-node=4   GPUs; the script starts one training process per granted GPU
#   --cpus-per-task=32  CPUs (one task per node): 4 processes x (1 + 4 data loader workers, each
#                       decoding six 1600x900 JPEGs per sample) with room to spare
#   --mem=128G          host memory (an estimate, not a measurement: ~32 GB per process)
#   e.g. `sbatch --gpus-per-node=8 --cpus-per-task=64 --mem=256G ...`, or whole nodes:
#   `sbatch --exclusive --mem=0 ...`. srun passes the CPUs and memory on to the per-node step
#   (Slurm 22.05-23.02 srun does not inherit --cpus-per-task by itself).
# Environment (sbatch passes the submitting shell's environment on):
#   RUN            per-node script (default slurm/socc_8gpu.sh = training; slurm/test.sh = evaluation)
#   CONFIG         config file (required)
#   WORK_DIR       work directory (default work_dirs/<config name>)
#   GPUS_PER_NODE  processes per node: by default the GPUs Slurm granted; if set it must equal
#                  them (the job stops with one line otherwise); required on CPU nodes
#                  (`GPUS_PER_NODE=2 sbatch --gpus-per-node=0 ...`: 2 CPU processes per node, gloo)
#   CHECKPOINT     checkpoint to evaluate (slurm/test.sh); the latest: $(cat WORK_DIR/last_checkpoint)
#   PY_ARGS        extra arguments for tools/train.py or tools/test.py
#   MASTER_PORT    rendezvous port (default 20000 + job id % 10000, below the first node's
#                  ephemeral port range; see slurm/_common.sh)
#   PYTHON         interpreter (default .venv/bin/python if present, else python3); it must import
#                  torch and mmengine; this checkout goes first on PYTHONPATH (no pip install -e .)
#   SOCC_BUILD_GSPLAT  1 (default): slurm/socc_8gpu.sh builds gsplat's CUDA extension once per node
#                  before torchrun (under a lock; a clear error if it cannot); 0: skip
#
# Preemption: Slurm sends USR1 to this script 120 s before the time limit (--signal below; change
# it with `sbatch --signal=B:USR1@300`; `scancel --signal=USR1 --batch JOBID` does the same by
# hand). A SIGTERM to this script is handled the same way; a scheduler preempting the job sends
# SIGTERM to the training processes themselves, which splattingocc.engine.PreemptionHook treats
# the same way (slurm/socc_8gpu.sh keeps torchrun from killing them on it). The script touches
# WORK_DIR/.preempt-request; PreemptionHook (in the config's custom_hooks) saves a checkpoint at
# the next iteration boundary, writes WORK_DIR/.preempt-saved and stops training; the job then
# requeues itself and the requeued job resumes from WORK_DIR (--resume). Slurm delays a requeued
# job by about 2 minutes (BeginTime). Epoch-based schedules need
# train_cfg.type='PreemptibleEpochBasedTrainLoop' to stop mid-epoch; the real schedule also
# checkpoints every 500 iterations (IntervalCheckpointHook) for kills without warning. The
# signal must go to this script only (B:): torchrun and data loader workers are not meant to
# receive USR1. The exit code is srun's (0 after a requeue).
#SBATCH --job-name=splattingocc
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --mem=128G
#SBATCH --time=72:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

# a USR1 / TERM before the handlers below are set would end the job: note it, act on it later
preempted=0
trap 'preempted=1' USR1 TERM

REPO="${REPO:-${SLURM_SUBMIT_DIR:-$(pwd)}}"
cd "$REPO"
if [ ! -f tools/train.py ] || [ ! -f slurm/_common.sh ]; then
  echo "run_2_nodes.sh: $REPO is not the SplattingOcc repository: submit from its root (or set REPO)" >&2
  exit 2
fi
# shellcheck source=slurm/_common.sh
source slurm/_common.sh
: "${CONFIG:?set CONFIG=path/to/config.py}"
[ -f "$CONFIG" ] || { echo "run_2_nodes.sh: config '$CONFIG' not found (relative to $REPO)" >&2; exit 2; }
export RUN="${RUN:-slurm/socc_8gpu.sh}"
[ -f "$RUN" ] || { echo "run_2_nodes.sh: RUN script '$RUN' not found" >&2; exit 2; }
export CONFIG
export WORK_DIR="${WORK_DIR:-work_dirs/$(basename "${CONFIG%.py}")}"
case "$WORK_DIR" in /*) ;; *) WORK_DIR="$REPO/$WORK_DIR" ;; esac  # absolute: flag files below
GPUS_PER_NODE="$(socc_procs_per_node)" || exit 2
export GPUS_PER_NODE
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHON
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
socc_check_python "$PYTHON" "$REPO" || exit 2
first_node="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
# the node's address as the cluster knows it (NodeAddr; equals the node name on most clusters)
addr="$(scontrol show node "$first_node" | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p')"
export MASTER_ADDR="${MASTER_ADDR:-${addr:-$first_node}}"
if [ -z "${MASTER_PORT:-}" ]; then
  MASTER_PORT="$(socc_master_port "$SLURM_JOB_ID")" || exit 2
fi
export MASTER_PORT
export NNODES="$SLURM_JOB_NUM_NODES"
mkdir -p "$WORK_DIR"
# the request file splattingocc.engine.PreemptionHook watches, and the file it writes once the
# preemption checkpoint is complete (its iteration)
export SOCC_PREEMPT_FLAG="$WORK_DIR/.preempt-request"
SAVED="$WORK_DIR/.preempt-saved"
rm -f "$SOCC_PREEMPT_FLAG" "$SAVED"

# what srun passes on to the per-node step: the CPUs and memory the job got per node
srun_args=(--ntasks-per-node=1 --kill-on-bad-exit=1)
if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then srun_args+=("--cpus-per-task=$SLURM_CPUS_PER_TASK"); fi
if [ -n "${SLURM_MEM_PER_NODE:-}" ]; then srun_args+=("--mem=${SLURM_MEM_PER_NODE}M"); fi

echo "[run_2_nodes] job ${SLURM_JOB_ID} (restart ${SLURM_RESTART_COUNT:-0}) nodes: $(scontrol show hostnames "$SLURM_JOB_NODELIST" | tr '\n' ' ')"
echo "[run_2_nodes] RUN=$RUN CONFIG=$CONFIG WORK_DIR=$WORK_DIR GPUS_PER_NODE=$GPUS_PER_NODE master=$MASTER_ADDR:$MASTER_PORT"
echo "[run_2_nodes] per node: $(socc_gpus_granted) GPUs, ${SLURM_CPUS_PER_TASK:-?} CPUs, ${SLURM_MEM_PER_NODE:-?} MB; srun ${srun_args[*]}"

on_preempt() {
  echo "[run_2_nodes] $1 received: asking training to checkpoint and stop"
  preempted=1
  touch "$SOCC_PREEMPT_FLAG"
}
trap 'on_preempt USR1' USR1
trap 'on_preempt TERM' TERM
if [ "$preempted" = 1 ]; then on_preempt 'USR1/TERM'; fi  # the signal came during the set-up

srun "${srun_args[@]}" bash "$RUN" &
rc=0
socc_wait_rc "$!" || rc=$?

# .preempt-saved: training checkpointed on a request (this script's flag file, or a signal the
# training processes got themselves) and stopped: continue in a requeued job
if [ -f "$SAVED" ]; then
  echo "[run_2_nodes] checkpoint saved at iteration $(cat "$SAVED") (srun exit code $rc); requeueing job ${SLURM_JOB_ID}"
  rm -f "$SOCC_PREEMPT_FLAG"
  if ! scontrol requeue "$SLURM_JOB_ID"; then
    echo "[run_2_nodes] scontrol requeue refused (job cancelled?): resubmit with the same WORK_DIR to resume" >&2
    exit 1
  fi
  exit 0
fi
if [ "$preempted" = 1 ]; then
  echo "[run_2_nodes] preemption requested but no checkpoint was saved (PreemptionHook missing from the config, or training ended first)"
fi
echo "[run_2_nodes] finished with exit code $rc"
exit "$rc"
