#!/usr/bin/env bash
# A local Slurm on this machine, for tests: munged, slurmctld and one slurmd per node under one state directory.
#
#   cluster/local_slurm.sh start [--nodes N] [STATE_DIR]   # prints `export SLURM_CONF=...`; eval it to use sbatch/srun
#   cluster/local_slurm.sh stop  [STATE_DIR]
#
# Needs root and Debian's slurm-wlm + munge (scripts/setup_system.sh). One node (the default) is this host (its short
# name, which must resolve: Lightning uses it as the DDP master address) at 127.0.0.1. N > 1 nodes are n1 ... nN,
# each its own slurmd on this host (`slurmd -N n1`; Debian's Slurm is built with multiple-slurmd support), all at
# 127.0.0.1, each with its own port and spool, pid and log files (%n in slurm.conf); their names do not resolve, so
# launch.sh gives DDP the first node's NodeAddr. Every node reports all the CPUs of `nproc` (nproc alone would count
# OMP_NUM_THREADS): the nodes share this host's cores. proctrack/linuxproc and task/none, so no cgroups are needed.
# Ports: SLURM_LOCAL_PORT (default 16817) for slurmctld, the next N for the slurmds. Job ids start at that port
# number, so two local clusters' jobs get different ids (Lightning derives the DDP master port from the job id).
# `stop` cancels the jobs before the daemons.
set -euo pipefail

usage() { echo "usage: $0 start [--nodes N] [STATE_DIR] | stop [STATE_DIR]" >&2; exit 2; }
action=${1:-}
(($#)) && shift
nodes=1 state=""
while (($#)); do
  case $1 in
    --nodes) (($# >= 2)) || usage; nodes=$2; shift 2 ;;
    --nodes=*) nodes=${1#*=}; shift ;;
    -*) usage ;;
    *) [[ -z $state ]] || usage; state=$1; shift ;;
  esac
done
[[ $nodes =~ ^[1-9][0-9]*$ ]] || { echo "local_slurm: --nodes takes a whole number of at least 1, got '$nodes'" >&2; exit 2; }
state=${state:-${SPECIALIZE_SLURM_STATE:-/tmp/specialize-slurm}}
port=${SLURM_LOCAL_PORT:-16817}

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
any_alive() { local pid; for pid; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }

node_names() {  # this host's short name for one node, n1 ... nN for more
  if ((nodes == 1)); then hostname -s; else seq -f 'n%g' "$nodes"; fi
}

write_conf() {
  local cpus memory name index=0
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
  memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 3 / 4 / nodes ))
  cat > "$state/slurm.conf" <<CONF
ClusterName=specialize-local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge/munge.socket
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/slurmd/%n
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd-%n.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobRequeue=1
FirstJobId=$port
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=300
KillWait=5
InactiveLimit=0
CONF
  for name in $(node_names); do
    index=$((index + 1))
    echo "NodeName=$name NodeAddr=127.0.0.1 NodeHostname=$(hostname) Port=$((port + index)) CPUs=$cpus RealMemory=$memory State=UNKNOWN"
  done >> "$state/slurm.conf"
  echo "PartitionName=local Nodes=$(node_names | paste -s -d ,) Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES" >> "$state/slurm.conf"
}

start() {
  mkdir -p "$state"/{munge,ctld,slurmd}
  chmod 700 "$state/munge"
  if ! pid_alive "$state/munged.pid"; then
    [[ -f $state/munge/munge.key ]] || { dd if=/dev/urandom bs=1 count=1024 of="$state/munge/munge.key" status=none; chmod 400 "$state/munge/munge.key"; }
    munged --force --key-file="$state/munge/munge.key" --socket="$state/munge/munge.socket" \
      --pid-file="$state/munged.pid" --log-file="$state/munged.log" --seed-file="$state/munge/munge.seed"
  fi
  write_conf
  export SLURM_CONF=$state/slurm.conf
  pid_alive "$state/slurmctld.pid" || slurmctld -f "$SLURM_CONF"
  for name in $(node_names); do
    pid_alive "$state/slurmd-$name.pid" || slurmd -f "$SLURM_CONF" -N "$name"
  done
  for _ in $(seq 60); do
    if (($(sinfo -h -N -o %T 2>/dev/null | grep -cE '^(idle|mixed|allocated)') == nodes)); then
      echo "export SLURM_CONF=$SLURM_CONF"
      return 0
    fi
    sleep 0.5
  done
  echo "local_slurm: not all $nodes node(s) came up; see $state/slurmctld.log and $state/slurmd-*.log" >&2
  return 1
}

stop() {
  local pid_file pid daemons
  if pid_alive "$state/slurmctld.pid"; then  # end the jobs first, so that none outlives its cluster
    export SLURM_CONF=$state/slurm.conf
    scancel --quiet --full --user="$(id -un)" || true
    for _ in $(seq 240); do  # a Ray node drains for up to 30 s on SIGTERM before Slurm's SIGKILL
      [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break
      sleep 0.5
    done
  fi
  # The daemons, then this cluster's job steps still ending (a step ending when slurmctld stopped would wait for
  # it; theirs is the environment the slurmds started with). A daemon that does not stop in 10 s is killed.
  daemons=()
  for pid_file in "$state"/slurmd-*.pid "$state/slurmctld.pid" "$state/munged.pid"; do
    if pid_alive "$pid_file"; then daemons+=("$(cat "$pid_file")"); fi
  done
  for pid in $(pgrep -x slurmstepd || true); do
    if tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$state/slurm.conf"; then
      daemons+=("$pid")
    fi
  done
  ((${#daemons[@]})) || return 0
  kill "${daemons[@]}" 2>/dev/null || true
  for _ in $(seq 20); do
    any_alive "${daemons[@]}" || return 0
    sleep 0.5
  done
  kill -KILL "${daemons[@]}" 2>/dev/null || true
}

case $action in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
