#!/usr/bin/env bash
# A single-node Slurm on this machine, for tests: munged, slurmctld and slurmd under one state directory.
#
#   cluster/local_slurm.sh start [STATE_DIR]   # prints `export SLURM_CONF=...`; eval it to use sbatch/srun/squeue
#   cluster/local_slurm.sh stop  [STATE_DIR]
#
# Needs root and Debian's slurm-wlm + munge (scripts/setup_system.sh). The node is this host (its short name, which
# must resolve: Lightning uses it as the DDP master address) at 127.0.0.1, with
# the CPUs of `nproc` (all of them: nproc alone would count OMP_NUM_THREADS); proctrack/linuxproc and task/none, so no
# cgroups are needed; ports SLURM_LOCAL_PORT
# (default 16817) and the next one. Job ids start at that port number, so two local clusters' jobs get different
# ids (Lightning derives the DDP master port from the job id). `stop` cancels the jobs before the daemons.
set -euo pipefail

action=${1:-}
state=${2:-${SPECIALIZE_SLURM_STATE:-/tmp/specialize-slurm}}
port=${SLURM_LOCAL_PORT:-16817}

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_conf() {
  local cpus memory
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
  memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 3 / 4 ))
  cat > "$state/slurm.conf" <<CONF
ClusterName=specialize-local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge/munge.socket
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
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
NodeName=$(hostname -s) NodeAddr=127.0.0.1 NodeHostname=$(hostname) CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=$(hostname -s) Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
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
  pid_alive "$state/slurmd.pid" || slurmd -f "$SLURM_CONF" -N "$(hostname -s)"
  for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      echo "export SLURM_CONF=$SLURM_CONF"
      return 0
    fi
    sleep 0.5
  done
  echo "local_slurm: the node did not come up; see $state/slurmctld.log and $state/slurmd.log" >&2
  return 1
}

stop() {
  local daemon
  if pid_alive "$state/slurmctld.pid"; then  # end the jobs first, so that none outlives its cluster
    export SLURM_CONF=$state/slurm.conf
    scancel --quiet --full --user="$(id -un)" || true
    for _ in $(seq 60); do
      [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break
      sleep 0.5
    done
  fi
  for daemon in slurmd slurmctld munged; do
    if pid_alive "$state/$daemon.pid"; then
      kill "$(cat "$state/$daemon.pid")"
    fi
  done
}

case $action in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop [STATE_DIR]" >&2; exit 2 ;;
esac
