# Shared by tools/dist_train.sh and tools/dist_test.sh (sourced, not run): start one process per
# worker through torchrun on tools/<script> with the given arguments.
#   torchrun_launch NPROC SCRIPT [script arguments...]
# Settings (environment, defaults in brackets):
#   NNODES [1]  NODE_RANK [0]  MASTER_ADDR [127.0.0.1]  PORT [29500]
#   PYTHON [.venv/bin/python of the repository if present, else python]
torchrun_launch() {
  local nproc=$1 script=$2
  shift 2
  local repo
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  local python=${PYTHON:-}
  if [ -z "$python" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python; fi
  fi
  PYTHONPATH="$repo:${PYTHONPATH:-}" exec "$python" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$nproc" "$repo/tools/$script" "$@"
}
