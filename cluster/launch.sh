#!/usr/bin/env bash
# Submit a command as a Slurm batch job that runs it with srun, one task per GPU (or per CPU process for --gpus-per-node 0).
#
#   cluster/launch.sh [--nodes N] [--gpus-per-node G] [--ntasks-per-node T] [--dry-run] [sbatch options] -- COMMAND...
#   cluster/launch.sh --nodes 2 --gpus-per-node 4 --time 24:00:00 -- specialize train --config configs/face_object.yaml
#
# The job script (written to $SPECIALIZE_SLURM_DIR, default runs/slurm/, with the job's log beside it) asks for
# N nodes, G GPUs and T = G tasks per node (T = 1 without GPUs unless given), --signal=USR1@90 and --requeue:
# 90 s before the time limit every rank of `specialize train` saves a checkpoint at the same step and exits with
# code 3 (lightning_modules/preemption.py); the script then requeues the job, and the restarted job continues
# from that checkpoint (the run directory depends only on the config, so the same command finds it). For `specialize train`
# the overrides trainer.devices=T trainer.num_nodes=N are appended, so Lightning's process layout matches the job.
# Other options go to sbatch unchanged. --dry-run writes and prints the script without submitting it.
set -euo pipefail

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

nodes=1 gpus=1 tasks="" dry_run=0 sbatch_args=()
requeue_code=3  # lightning_modules.preemption.REQUEUE_EXIT_CODE
while (($#)); do
  case $1 in
    --) shift; break ;;
    -N|--nodes) nodes=$2; shift 2 ;;
    --nodes=*) nodes=${1#*=}; shift ;;
    --gpus-per-node) gpus=$2; shift 2 ;;
    --gpus-per-node=*) gpus=${1#*=}; shift ;;
    --ntasks-per-node) tasks=$2; shift 2 ;;
    --ntasks-per-node=*) tasks=${1#*=}; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage ;;
    *) sbatch_args+=("$1"); shift ;;
  esac
done
(($#)) || usage
command=("$@")
if [[ -z $tasks ]]; then
  tasks=$(( gpus > 0 ? gpus : 1 ))
fi
for value in "$nodes" "$gpus" "$tasks"; do
  [[ $value =~ ^[0-9]+$ ]] || { echo "launch.sh: --nodes, --gpus-per-node and --ntasks-per-node take whole numbers, got '$value'" >&2; exit 2; }
done
if [[ " ${command[*]} " == *" train "* && ( " ${command[*]} " == *specialize* ) ]]; then
  command+=("trainer.devices=$tasks" "trainer.num_nodes=$nodes")
fi

job_dir=${SPECIALIZE_SLURM_DIR:-runs/slurm}
mkdir -p "$job_dir"
job_dir=$(cd "$job_dir" && pwd)
script="$job_dir/job-$(date +%Y%m%d-%H%M%S)-$$.sbatch"
{
  echo "#!/bin/bash"
  echo "#SBATCH --job-name=specialize"
  echo "#SBATCH --nodes=$nodes"
  echo "#SBATCH --ntasks-per-node=$tasks"
  if ((gpus > 0)); then echo "#SBATCH --gpus-per-node=$gpus"; fi
  echo "#SBATCH --signal=USR1@90"
  echo "#SBATCH --requeue"
  echo "#SBATCH --open-mode=append"
  echo "#SBATCH --output=$job_dir/%x-%j.out"
  echo "# submitted from $(pwd) with: sbatch ${sbatch_args[*]:-} $script"
  echo "cd $(printf '%q' "$(pwd)")"
  echo "# torch threads per rank: the CPUs Slurm gives each task (1 if not set), unless OMP_NUM_THREADS is already set"
  echo 'export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}'
  printf 'srun'; printf ' %q' "${command[@]}"; echo
  echo 'status=$?'
  echo "# exit code $requeue_code: the command saved a checkpoint on SIGUSR1 and wants to continue in a new allocation"
  echo "if ((status == $requeue_code)); then scontrol requeue \"\$SLURM_JOB_ID\"; fi"
  echo 'exit $status'
} > "$script"

if ((dry_run)); then
  cat "$script"
  exit 0
fi
sbatch --parsable "${sbatch_args[@]}" "$script"
