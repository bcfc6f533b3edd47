#!/usr/bin/env bash
# A two-node Slurm cluster on this one machine, for tests and for trying the Slurm scripts:
# one slurmctld and two slurmd (node1, node2) with auth/none, loopback only.
#
#   bash slurm/local_cluster.sh start   # installs slurm-wlm with apt-get if missing, starts it
#   export SLURM_CONF=$SOCC_SLURM_DIR/slurm.conf   (start prints this line)
#   sbatch -N 2 ... ; squeue ; sinfo
#   bash slurm/local_cluster.sh stop    # ends exactly the daemons it started (pid files)
#   bash slurm/local_cluster.sh status
#
# Settings (environment): SOCC_SLURM_DIR (state, logs, pid files; default
# ${XDG_RUNTIME_DIR:-/tmp}/splattingocc-slurm-<uid>, created private; a folder owned by another
# user is refused), SOCC_SLURM_PORT (first of the four ports used; default 16817),
# SOCC_SLURM_CPUS (CPUs each node announces; default: nproc), SOCC_SLURM_GPUS (placeholder 'gpu'
# generic resources each node announces, default 4: no GPU behind them, see write_conf).
set -euo pipefail
DIR="${SOCC_SLURM_DIR:-${XDG_RUNTIME_DIR:-/tmp}/splattingocc-slurm-$(id -u)}"
PORT="${SOCC_SLURM_PORT:-16817}"
CPUS="${SOCC_SLURM_CPUS:-$(nproc)}"
GPUS="${SOCC_SLURM_GPUS:-4}"
CONF="$DIR/slurm.conf"
log() { echo "[local_cluster] $*"; }
die() { echo "[local_cluster] ERROR: $*" >&2; exit 1; }

install_slurm() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || die "slurm-wlm is not installed and apt-get is unavailable: install Slurm (slurmctld, slurmd, sbatch) another way"
  [ "$(id -u)" = 0 ] || die "installing slurm-wlm needs root (apt-get): run as root or install it first"
  log "installing Debian's slurm-wlm (apt-get update && apt-get install slurm-wlm)"
  apt-get update -qq >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm >/dev/null || die "apt-get install slurm-wlm failed"
}

# a pid file names one of this cluster's daemons only if that process is slurmctld / slurmd
# started with this cluster's slurm.conf: a stale or planted pid file never gets a process killed
alive() {
  local pid cmd
  [ -f "$1" ] || return 1
  pid="$(cat "$1")"
  case "$pid" in ''|*[!0-9]*) return 1 ;; esac
  kill -0 "$pid" 2>/dev/null || return 1
  cmd="$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" || return 1
  case "$cmd" in
    slurmctld\ *"-f $CONF"*|*/slurmctld\ *"-f $CONF"*|slurmd\ *"-f $CONF"*|*/slurmd\ *"-f $CONF"*) return 0 ;;
  esac
  return 1
}

own_dir() {
  mkdir -p -m 700 "$DIR"
  [ "$(stat -c %u "$DIR")" = "$(id -u)" ] \
    || die "$DIR belongs to another user: set SOCC_SLURM_DIR to a folder of yours"
}

write_conf() {
  local host mem
  host="$(hostname)"
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 4 ))
  mkdir -p "$DIR/state" "$DIR/spool/node1" "$DIR/spool/node2" "$DIR/log"
  cat > "$CONF.tmp" <<CONF
# written by slurm/local_cluster.sh: a two-node test cluster on $(hostname), loopback only
ClusterName=socc-local
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${PORT}
SlurmdPort=$((PORT + 1))
AuthType=auth/none
CredType=cred/none
SlurmUser=$(id -un)
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobCompType=jobcomp/none
#GRES GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=600
KillWait=10
InactiveLimit=0
NodeName=node[1-2] NodeHostname=${host} NodeAddr=127.0.0.1 Port=[$((PORT + 2))-$((PORT + 3))] CPUs=${CPUS} RealMemory=${mem} @GRES@State=UNKNOWN
PartitionName=debug Nodes=node[1-2] Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
  # Placeholder GPUs: slurmd wants a character device per gpu gres, so each is a node aliasing
  # /dev/null (major 1, minor 3). They let the scripts' "#SBATCH --gpus-per-node" lines schedule as
  # on a GPU cluster; the processes find no CUDA and train on CPUs with gloo.
  if [ "$GPUS" -gt 0 ]; then
    local i ok=1
    for i in $(seq 0 $((GPUS - 1))); do
      rm -f "$DIR/gpu$i"; mknod "$DIR/gpu$i" c 1 3 2>/dev/null || ok=0
    done
    if [ "$ok" = 1 ]; then
      echo "Name=gpu File=$DIR/gpu[0-$((GPUS - 1))]" > "$DIR/gres.conf"
      sed -i "s/^#GRES //; s/@GRES@/Gres=gpu:${GPUS} /" "$CONF.tmp"
    else
      log "cannot mknod placeholder GPU devices (not root?): nodes announce no GPUs; submit with --gpus-per-node=0"
      GPUS=0
    fi
  fi
  sed -i "s/@GRES@//" "$CONF.tmp"
  mv "$CONF.tmp" "$CONF"
}

start() {
  install_slurm
  own_dir
  if alive "$DIR/slurmctld.pid"; then
    log "already running (state in $DIR)"
  else
    write_conf
    log "starting slurmctld and slurmd node1, node2 (state and logs in $DIR)"
    SLURM_CONF="$CONF" slurmctld -f "$CONF" || die "slurmctld failed to start: see $DIR/log/slurmctld.log"
    for n in node1 node2; do
      SLURM_CONF="$CONF" slurmd -f "$CONF" -N "$n" || die "slurmd -N $n failed to start: see $DIR/log/slurmd.$n.log"
    done
  fi
  export SLURM_CONF="$CONF"
  local i
  for i in $(seq 1 60); do
    if [ "$(sinfo -h -N -o '%T' 2>/dev/null | grep -cE '^(idle|mixed|allocated)')" = 2 ]; then
      log "cluster up: 2 nodes idle"
      echo "export SLURM_CONF=$CONF"
      return 0
    fi
    sleep 1
  done
  sinfo -N >&2 || true
  die "nodes did not become idle within 60 s: see $DIR/log/"
}

stop() {
  local f stopped=0
  [ -d "$DIR" ] || { log "nothing to stop ($DIR does not exist)"; return 0; }
  own_dir
  # cancel this cluster's jobs first: killing slurmd would leave their processes running
  if alive "$DIR/slurmctld.pid" && [ -f "$CONF" ]; then
    if [ -n "$(SLURM_CONF="$CONF" squeue -h 2>/dev/null)" ]; then
      log "cancelling the jobs of this cluster"
      SLURM_CONF="$CONF" scancel --full --user="$(id -un)" 2>/dev/null || true
      for _ in $(seq 1 60); do
        [ -z "$(SLURM_CONF="$CONF" squeue -h 2>/dev/null)" ] && break
        sleep 0.5
      done
    fi
  fi
  for f in "$DIR"/slurmd.node1.pid "$DIR"/slurmd.node2.pid "$DIR"/slurmctld.pid; do
    if alive "$f"; then
      kill "$(cat "$f")" && stopped=$((stopped + 1))
    fi
  done
  for f in "$DIR"/slurmd.node1.pid "$DIR"/slurmd.node2.pid "$DIR"/slurmctld.pid; do
    for _ in $(seq 1 50); do alive "$f" || break; sleep 0.2; done
    if alive "$f"; then kill -9 "$(cat "$f")" || true; fi
    if [ -f "$f" ] && ! alive "$f"; then rm -f "$f"; fi
  done
  log "stopped $stopped daemon(s) started from $DIR"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) export SLURM_CONF="$CONF"; sinfo -N || true ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
