# shellcheck shell=bash
# Helpers of the Slurm scripts (sourced by slurm/run_2_nodes.sh; tests/slurm/test_slurm_scripts.py
# runs each on its own). Functions only: sourcing it changes nothing.

# socc_gpus_granted: the GPUs Slurm granted this job per node: SLURM_GPUS_ON_NODE, else the count
# in SLURM_GPUS_PER_NODE ("4", "a100:4", "a100:2,v100:2"), else the entries of SLURM_JOB_GPUS
# ("0,1,2,3", set for --gres=gpu:N), else 0.
socc_gpus_granted() {
  local entry total=0
  if [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then
    echo "$SLURM_GPUS_ON_NODE"
  elif [ -n "${SLURM_GPUS_PER_NODE:-}" ]; then
    for entry in ${SLURM_GPUS_PER_NODE//,/ }; do
      case "${entry##*:}" in
        ''|*[!0-9]*) echo "$SLURM_GPUS_PER_NODE"; return ;;  # unreadable: the caller says so
      esac
      total=$((total + ${entry##*:}))
    done
    echo "$total"
  elif [ -n "${SLURM_JOB_GPUS:-}" ]; then
    for entry in ${SLURM_JOB_GPUS//,/ }; do total=$((total + 1)); done
    echo "$total"
  else
    echo 0
  fi
}

# socc_procs_per_node: training processes per node = the GPUs Slurm granted per node (one process
# per GPU). GPUS_PER_NODE may name the number too; it must then equal the grant. Where Slurm
# granted no GPU (CPU nodes: --gpus-per-node=0) GPUS_PER_NODE is required and is the number of
# CPU processes (gloo). Prints the number, or one line on stderr and returns 2.
socc_procs_per_node() {
  local granted want="${GPUS_PER_NODE:-}"
  granted="$(socc_gpus_granted)"
  case "$granted" in
    ''|*[!0-9]*)
      echo "run_2_nodes.sh: cannot read the GPUs Slurm granted (SLURM_GPUS_PER_NODE='${SLURM_GPUS_PER_NODE:-}'): submit with --gpus-per-node=N" >&2
      return 2 ;;
  esac
  if [ -n "$want" ]; then
    case "$want" in
      *[!0-9]*|0)
        echo "run_2_nodes.sh: GPUS_PER_NODE='$want' is not a positive number of processes per node" >&2
        return 2 ;;
    esac
  fi
  if [ "$granted" -gt 0 ]; then
    if [ -n "$want" ] && [ "$want" != "$granted" ]; then
      echo "run_2_nodes.sh: GPUS_PER_NODE=$want but Slurm granted $granted GPUs per node: submit with --gpus-per-node=$want, or unset GPUS_PER_NODE (one process per granted GPU)" >&2
      return 2
    fi
    echo "$granted"
  elif [ -n "$want" ]; then
    echo "$want"
  else
    echo "run_2_nodes.sh: Slurm granted no GPUs (--gpus-per-node=0): set GPUS_PER_NODE=<processes per node> for a CPU run (gloo)" >&2
    return 2
  fi
}

# socc_master_port JOBID [RANGE_FILE]: the rendezvous port, derived from the job id (a requeued job
# keeps it) and below the node's ephemeral port range (RANGE_FILE, default
# /proc/sys/net/ipv4/ip_local_port_range: "low high"; Linux's default 32768 60999), where an
# outgoing connection of any process may already hold it: 20000 + JOBID % min(10000, low - 20000);
# 1024 + JOBID % ... where the range starts below 21000. Returns 1 (one line) if there is no room.
socc_master_port() {
  local id="$1" file="${2:-/proc/sys/net/ipv4/ip_local_port_range}" low=32768 base=20000 span
  if [ -r "$file" ]; then read -r low _ < "$file" || low=32768; fi
  case "$low" in ''|*[!0-9]*) low=32768 ;; esac
  if [ "$low" -lt 21000 ]; then base=1024; fi
  span=$((low - base))
  if [ "$span" -gt 10000 ]; then span=10000; fi
  if [ "$span" -lt 100 ]; then
    echo "run_2_nodes.sh: the ephemeral port range starts at $low ($file): no room below it for the rendezvous port; set MASTER_PORT" >&2
    return 1
  fi
  echo $((base + id % span))
}

# socc_wait_rc PID: wait for the background job PID (srun) and return its exit status. A signal
# with a trap interrupts `wait` (status 128 + signal number): keep waiting while PID runs; if the
# signal came just as PID ended, ask once more, for PID's own status (bash keeps the status of a
# finished background job).
socc_wait_rc() {
  local pid="$1" rc again
  while :; do
    rc=0
    wait "$pid" || rc=$?
    kill -0 "$pid" 2>/dev/null || break
  done
  if [ "$rc" -gt 128 ]; then
    again=0
    wait "$pid" 2>/dev/null || again=$?
    if [ "$again" != 127 ]; then rc=$again; fi  # 127: bash no longer knows PID
  fi
  return "$rc"
}

# socc_check_python PYTHON REPO: PYTHON imports torch, mmengine and this checkout's splattingocc
# (with REPO first on PYTHONPATH, as the per-node scripts run it; no `pip install -e .` needed).
# Returns 2 with one line naming the fix otherwise.
socc_check_python() {
  local python="$1" repo out real_repo
  repo="$(cd "$2" && pwd -P)"
  if ! out="$(cd / && PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$python" -c \
      'import os, torch, mmengine, splattingocc; print(os.path.realpath(os.path.dirname(os.path.dirname(splattingocc.__file__))))' 2>&1)"; then
    echo "run_2_nodes.sh: '$python' cannot import torch, mmengine and splattingocc ($(printf '%s\n' "$out" | tail -n 1)): set PYTHON=/path/to/env/bin/python, or make $repo/.venv with bash tools/setup_env.sh" >&2
    return 2
  fi
  real_repo="$(printf '%s\n' "$out" | tail -n 1)"
  if [ "$real_repo" != "$repo" ]; then
    echo "run_2_nodes.sh: '$python' imports splattingocc from $real_repo, not from $repo: set PYTHON to an environment without another SplattingOcc installed" >&2
    return 2
  fi
}
