#!/usr/bin/env bash
# Submit a command as a Slurm batch job: training over srun (Lightning DDP), Ray commands on a Ray cluster started
# inside the allocation, seeds as job arrays.
#
#   cluster/launch.sh [--nodes N] [--gpus-per-node G] [--ntasks-per-node T] [--cpus-per-task C] [--ray]
#                     [--ray-dashboard] [--array SPEC] [--site FILE] [--dry-run] [sbatch options] -- COMMAND...
#
#   cluster/launch.sh --nodes 2 --gpus-per-node 4 --time 48:00:00 -- specialize train --config configs/face_object.yaml
#   cluster/launch.sh --array 0-4 --time 48:00:00 -- specialize train --config configs/face_object.yaml
#   cluster/launch.sh --nodes 4 --gpus-per-node 4 --cpus-per-task 32 --time 12:00:00 -- \
#       specialize lesion --checkpoint runs/train/face_object/checkpoints/best.ckpt --data data/real --out runs/lesion/fo
#
# Training (any command that is not a Ray command): N nodes x T tasks (T = G, or 1 without GPUs), `srun` runs the
# command once per task. `specialize train` gets trainer.devices=T trainer.num_nodes=N, and --cpus-per-task defaults
# to the config's data.num_workers + 1 (its loader workers and the rank itself). --signal=USR1@90: 90 s before the
# time limit every rank saves a checkpoint and exits with code 3 (lightning_modules/preemption.py); the job then
# requeues itself and the rerun continues from that checkpoint.
#
# Ray mode (the specialize commands that run on Ray, as `specialize cluster plan` says; any other command with --ray):
# one task per node.
# The job starts a Ray head on its first node and a Ray worker on every other node (srun), announces to Ray the
# CPUs of each node's task (--cpus-per-task, or all the job holds on the node) and its G GPUs, waits until every
# node has joined, runs the command once on the head with --address (specialize's Ray commands) and RAY_ADDRESS
# (any command), and stops Ray at the end. --signal=B:USR1@90 signals the job script, which interrupts the command
# (SIGINT), stops Ray and requeues the job; the rerun resumes from the finished chunks and units. --ray-dashboard
# starts Ray's dashboard with the head, on the head node's 127.0.0.1 (the job log says how to tunnel to it; it needs
# Ray's dashboard packages, ray[default], in the job's environment).
#
# Arrays: --array SPEC (any Slurm array spec, e.g. 0-4 or 1,3,7) submits one job per index = seed:
# `specialize train` gets seed=<index> output.run_name=<its run name>-seed<index>, `specialize study` --seeds=<index>
# (each command says how: `specialize cluster plan`); a command that is not specialize's reads $SLURM_ARRAY_TASK_ID
# itself.
#
# Site file (--site FILE, or $SPECIALIZE_SITE, or cluster/site.env when present): partition, account, QoS, how to
# activate the environment on compute nodes, node-local scratch; see cluster/site.example.env. With a scratch
# directory, the job copies the data directory a specialize command reads (--data DIR, data.dir=DIR, or the training
# config's, as `specialize cluster plan` says) to every node once and points the command at that copy (FFCV reads
# best from local disk).
#
# Every task runs torch on OMP_NUM_THREADS = its CPUs (SLURM_CPUS_PER_TASK; 1 if not set), unless already set.
# The job script goes to $SPECIALIZE_SLURM_DIR (default runs/slurm/), its log beside it; --dry-run prints it
# without submitting. Other options before -- go to sbatch unchanged; $SBATCH names the sbatch to call.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
requeue_code=3  # lightning_modules.preemption.REQUEUE_EXIT_CODE
site_keys=(SITE_PARTITION SITE_ACCOUNT SITE_QOS SITE_ACTIVATE SITE_SCRATCH)

fail() { echo "launch.sh: $*" >&2; exit 2; }
usage() { sed -n '2,/^[^#]/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0; }  # the comment above

# ------------------------------------------------------------------------------------------------ arguments

nodes=1 gpus=1 tasks="" cpus="" ray=0 ray_dashboard=false array="" site=${SPECIALIZE_SITE:-} dry_run=0 separator=0 sbatch_args=()
set_option() {
  case $1 in
    -N|--nodes) nodes=$2 ;;
    --gpus-per-node) gpus=$2 ;;
    --ntasks-per-node) tasks=$2 ;;
    -c|--cpus-per-task) cpus=$2 ;;
    -a|--array) array=$2 ;;
    --site) site=$2 ;;
  esac
}
while (($#)); do
  case $1 in
    --) separator=1; shift; break ;;
    -N|--nodes|--gpus-per-node|--ntasks-per-node|-c|--cpus-per-task|-a|--array|--site)
      (($# >= 2)) || fail "$1 needs a value"
      set_option "$1" "$2"; shift 2 ;;
    --nodes=*|--gpus-per-node=*|--ntasks-per-node=*|--cpus-per-task=*|--array=*|--site=*)
      set_option "${1%%=*}" "${1#*=}"; shift ;;
    --ray) ray=1; shift ;;
    --ray-dashboard) ray_dashboard=true; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage ;;
    *) sbatch_args+=("$1"); shift ;;
  esac
done
((separator)) || fail "no command: put it after --, e.g. launch.sh --nodes 2 -- specialize lesion ... (options before -- are launch.sh's and sbatch's)"
(($#)) || fail "no command after --; e.g. launch.sh -- specialize train --config configs/face_object.yaml"
command=("$@")

whole_number() {  # whole_number OPTION VALUE MINIMUM
  [[ $2 =~ ^[0-9]+$ ]] && (($2 >= $3)) || fail "$1 takes a whole number of at least $3, got '$2'"
}
whole_number --nodes "$nodes" 1
whole_number --gpus-per-node "$gpus" 0
[[ -z $tasks ]] || whole_number --ntasks-per-node "$tasks" 1
[[ -z $cpus ]] || whole_number --cpus-per-task "$cpus" 1

errors=$(mktemp)
trap 'rm -f "$errors"' EXIT

# ----------------------------------------------------------------------- what the command needs (the CLI says)

specialize_words=0  # how many words run specialize: `specialize` or `python -m specialize.cli` (0: not specialize)
for i in "${!command[@]}"; do
  if [[ ${command[i]##*/} == specialize || ${command[i]} == specialize.cli ]]; then specialize_words=$((i + 1)); break; fi
done
subcommand=${command[specialize_words]:-}
((specialize_words)) || subcommand=""
needs_ray=0 data_dir="" data_word=-1 data_setting="" cpus_per_task="" seed_settings=() process_settings=()
if [[ -n $subcommand ]]; then  # sets the variables above (`specialize cluster plan --help`)
  plan=$("${command[@]:0:specialize_words}" cluster plan ${array:+--array} -- "${command[@]:specialize_words}" 2> "$errors") ||
    fail "cannot plan the job: $(tail -n 1 "$errors"); fix the command, or activate its environment before submitting"
  eval "$plan"
fi
((needs_ray)) && ray=1

if ((ray)); then
  [[ -z $tasks || $tasks == 1 ]] || fail "a Ray job runs one Slurm task per node (its Ray node); drop --ntasks-per-node $tasks"
  tasks=1
else
  [[ $ray_dashboard == false ]] || fail "--ray-dashboard is for Ray jobs (their cluster's dashboard); this command trains over srun (add --ray if it is a Ray command of your own)"
  tasks=${tasks:-$((gpus > 0 ? gpus : 1))}
fi

# ------------------------------------------------------------------------------------------------ site file

declare -A site_values=()
read_site() {  # KEY=VALUE lines (# comments); every key must be set, empty when the cluster needs none
  local line number=0 key value
  [[ -f $1 ]] || fail "site file $1 does not exist; copy cluster/site.example.env and fill it in"
  while IFS= read -r line || [[ -n $line ]]; do
    number=$((number + 1))
    [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
    [[ $line =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || fail "site file $1 line $number is not KEY=VALUE: $line"
    key=${BASH_REMATCH[1]} value=${BASH_REMATCH[2]}
    [[ " ${site_keys[*]} " == *" $key "* ]] || fail "site file $1 line $number: unknown key $key; the keys are ${site_keys[*]}"
    [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]] && value=${BASH_REMATCH[1]}
    site_values[$key]=$value
  done < "$1"
  for key in "${site_keys[@]}"; do
    [[ -v site_values[$key] ]] || fail "site file $1 does not set $key; set it (empty when your cluster needs none), see cluster/site.example.env"
  done
  [[ ${site_values[SITE_SCRATCH]} != *[\"\`\\]* ]] || fail "site file $1: SITE_SCRATCH may not contain \", \` or \\"
}
[[ -n $site || ! -f $here/site.env ]] || site=$here/site.env
[[ -z $site ]] || read_site "$site"
site_value() { [[ -v site_values[$1] ]] && printf '%s' "${site_values[$1]}"; return 0; }

sbatch=${SBATCH:-sbatch}
((dry_run)) || command -v "$sbatch" > /dev/null ||
  fail "no sbatch on this host ('$sbatch' not found); run launch.sh where Slurm's commands are, or use --dry-run to only write the job script"

# ------------------------------------------------------------------- the command as the job runs it

if ((!ray)) && ((${#process_settings[@]})); then  # e.g. trainer.devices=T trainer.num_nodes=N
  command+=("${process_settings[0]}$tasks" "${process_settings[1]}$nodes")
fi
[[ -n $cpus ]] || ((ray)) || cpus=$cpus_per_task  # e.g. a training process: its loader workers and itself

# The command as words of the job script: literal words quoted, a few that the job fills in (seed, data copy, address).
script_command=()
for word in "${command[@]}"; do script_command+=("$(printf '%q' "$word")"); done

if [[ -n $array ]]; then  # one seed per job (specialize refused --array already when the command takes no seed)
  for setting in "${seed_settings[@]}"; do script_command+=("$(printf '%q' "$setting")\"\$SLURM_ARRAY_TASK_ID\""); done
fi

data_source=""
scratch=$(site_value SITE_SCRATCH)
if [[ -n $scratch && -n $data_dir ]]; then  # point the command's data directory at the node-local copy
  copy=$(printf '%q' "$data_setting")'"$stage_dir"'
  if ((data_word < 0)); then
    script_command+=("$copy")
  else
    i=$((specialize_words + data_word))
    [[ ${command[i]} == "$data_setting"* ]] || copy='"$stage_dir"'  # --data DIR: the directory is a word alone
    script_command[i]=$copy
  fi
  data_source=$(cd "$data_dir" 2> /dev/null && pwd -P) || fail "data directory $data_dir does not exist; give an existing --data / data.dir"
fi
if ((needs_ray)); then script_command+=('--address "$ray_address"'); fi

# ------------------------------------------------------------------------------------------------ job script

job_dir=${SPECIALIZE_SLURM_DIR:-runs/slurm}
mkdir -p "$job_dir"
job_dir=$(cd "$job_dir" && pwd)
script="$job_dir/job-$(date +%Y%m%d-%H%M%S)-$$.sbatch"

directives() {
  echo "#SBATCH --job-name=specialize"
  echo "#SBATCH --nodes=$nodes"
  echo "#SBATCH --ntasks-per-node=$tasks"
  if ((gpus > 0)); then echo "#SBATCH --gpus-per-node=$gpus"; fi
  if [[ -n $cpus ]]; then echo "#SBATCH --cpus-per-task=$cpus"; fi
  if [[ -n $array ]]; then echo "#SBATCH --array=$array"; fi
  if ((ray)); then echo "#SBATCH --signal=B:USR1@90"; else echo "#SBATCH --signal=USR1@90"; fi
  echo "#SBATCH --requeue"
  echo "#SBATCH --open-mode=append"
  if [[ -n $array ]]; then echo "#SBATCH --output=$job_dir/%x-%A_%a.out"; else echo "#SBATCH --output=$job_dir/%x-%j.out"; fi
  local key option
  for key in SITE_PARTITION SITE_ACCOUNT SITE_QOS; do
    option=$(echo "${key#SITE_}" | tr '[:upper:]' '[:lower:]')
    if [[ -n $(site_value "$key") ]]; then echo "#SBATCH --$option=$(site_value "$key")"; fi
  done
}

preamble() {
  echo "# written by cluster/launch.sh in $(pwd)"
  echo "cd $(printf '%q' "$(pwd)")"
  if [[ -n $(site_value SITE_ACTIVATE) ]]; then
    echo "# the environment on the compute nodes (site file $site)"
    site_value SITE_ACTIVATE; echo
  fi
  echo "# torch threads per task: the CPUs Slurm gives each task (1 if not set), unless OMP_NUM_THREADS is already set"
  echo 'export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}'
  echo "# this job as scontrol names it: an array's task is ARRAYJOB_INDEX (its bare id can name the whole array)"
  echo 'this_job=$SLURM_JOB_ID'
  echo 'if [[ -n ${SLURM_ARRAY_JOB_ID:-} ]]; then this_job=${SLURM_ARRAY_JOB_ID}_$SLURM_ARRAY_TASK_ID; fi'
  if ((ray)); then
    echo 'preempted=0'
    echo "trap 'preempted=1' USR1  # --signal=B:USR1@90 before the command runs: requeue once Ray is up"
  fi
}

command_line() {  # the command, once the words the job fills in are known
  echo "command=(${script_command[*]})"
}

stage_data() {
  local name=${data_source##*/} key
  key=$(printf '%s' "$data_source" | cksum | cut -d ' ' -f 1)
  echo "# Node-local copy of the data directory (FFCV reads best from local disk): made once per node and kept for"
  echo "# later jobs; a copy whose manifest.json differs from the source's is replaced. One copier per node (flock)."
  echo "data_source=$(printf '%q' "$data_source")"
  echo "stage_dir=\"$scratch/specialize-data/\"$(printf '%q' "$name-$key")"
  cat << 'STAGE'
copy_once='set -e
mkdir -p "${2%/*}"
exec 9> "$2.lock"
flock 9
if [[ -f $2/.complete ]] && cmp -s "$1/manifest.json" "$2/manifest.json"; then exit 0; fi
rm -rf "$2" "$2.partial"
mkdir "$2.partial"
cp -a "$1/." "$2.partial/"
touch "$2.partial/.complete"
mv -T "$2.partial" "$2"'
echo "launch.sh job: copying $data_source to $stage_dir on each node"
if ! srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 \
    bash -c "$copy_once" copy "$data_source" "$stage_dir"; then
  echo "launch.sh job: copying $data_source to $stage_dir failed (see above); check SITE_SCRATCH in the site file" >&2
  exit 1
fi
STAGE
}

srun_body() {
  command_line
  cat << 'ADDRESS'
# DDP's rendezvous: the first node (this one) at the address Slurm reaches it by (its NodeAddr, on most clusters its
# name, which Lightning would use), unless MASTER_ADDR is set
if [[ -z ${MASTER_ADDR:-} ]]; then
  MASTER_ADDR=$(scontrol show node "$SLURMD_NODENAME" 2> /dev/null | grep -o 'NodeAddr=[^ ]*' | cut -d = -f 2) || true
  if [[ -n $MASTER_ADDR ]]; then export MASTER_ADDR; else unset MASTER_ADDR; fi
fi
ADDRESS
  echo 'srun "${command[@]}"'
  echo 'status=$?'
  echo "# exit code $requeue_code: the command saved a checkpoint on SIGUSR1 and wants to continue in a new allocation"
  echo "if ((status == $requeue_code)); then scontrol requeue \"\$this_job\"; fi"
  echo 'exit $status'
}

ray_body() {
  echo "ray_gpus=$gpus ray_dashboard=$ray_dashboard requeue_code=$requeue_code program=$(printf '%q' "${command[0]}") ray_stop_dir=$(printf '%q' "$job_dir")"
  ray_cluster
  command_line
  ray_driver
}

ray_cluster() {
  cat << 'RAY'
# ---- A Ray cluster in the allocation: the head on this node (the job's first), a worker on every other node.
# Ports: four per job from the job id (as Lightning derives its DDP port), so that jobs sharing a node do not
# collide: 25000 + 4 * (job id mod 1900), up to 32599, below Linux's ephemeral ports (32768+) where Ray picks its
# other ports at random, and above Lightning's DDP ports (15000 + the job id's last 4 digits).
ray_port=$((25000 + 4 * (SLURM_JOB_ID % 1900)))
ray_bin=$(dirname "$(command -v "$program")")  # ray and python of the command's environment
ray_cli=$ray_bin/ray ray_python=$ray_bin/python
[[ -x $ray_cli ]] || ray_cli=ray
[[ -x $ray_python ]] || ray_python=python3
ray_address=$("$ray_python" -c 'import ray.util; print(ray.util.get_node_ip_address())'):$ray_port
# Only this job's processes can join its cluster: Ray's token authentication, with a token of the job's own.
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export RAY_AUTH_TOKEN
ray_cpus=${SLURM_CPUS_PER_TASK:-$SLURM_CPUS_ON_NODE}  # each node's CPUs for Ray: its task's, or all the job has there
ray_node=(--block --num-cpus="$ray_cpus" --num-gpus="$ray_gpus" --temp-dir="/tmp/ray-$SLURM_JOB_ID" --disable-usage-stats)

ray_nodes() {  # how many nodes have joined the job's cluster (0 while it does not answer)
  (: < "/dev/tcp/${ray_address%:*}/$ray_port") 2> /dev/null || { echo 0; return; }
  timeout 60 "$ray_python" -c 'import sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)
print(sum(node["Alive"] for node in ray.nodes()))' "$ray_address" 2> /dev/null | tail -n 1 | grep -E '^[0-9]+$' || echo 0
}
wait_for_ray_nodes() {  # until $1 nodes have joined; fails after 5 minutes or when a Ray step has ended
  local deadline=$((SECONDS + 300))
  until (($(ray_nodes) >= $1)); do
    if ((SECONDS > deadline)) || ! kill -0 "${ray_steps[@]}" 2> /dev/null; then
      echo "launch.sh job: only $(ray_nodes) of $1 Ray nodes joined the cluster at $ray_address; see the Ray output above" >&2
      return 1
    fi
    sleep 2
  done
}
# Each node runs `ray start --block` under a watcher that sends it SIGTERM, alone, when a stop file appears (on
# the shared file system); ray start then drains its node and stops its processes. (Slurm cannot signal one process
# of a step: SIGTERM to srun kills the step at once, and scancel --signal reaches every Ray process together, so the
# GCS could be gone before the nodes drain.)
ray_stop=$ray_stop_dir/ray-$SLURM_JOB_ID
rm -f "$ray_stop".*
run_until_stopped='stop=$1
shift
"$@" &
node=$!
while kill -0 "$node" 2> /dev/null && [[ ! -e $stop ]]; do sleep 1; done
kill -TERM "$node" 2> /dev/null
wait "$node" || [[ -e $stop ]]'
stop_ray() {  # the workers, then the head
  echo "launch.sh job: stopping Ray"
  touch "$ray_stop.workers"
  if ((${#ray_steps[@]} > 1)); then wait "${ray_steps[@]:1}" 2> /dev/null; fi
  touch "$ray_stop.head"
  wait "${ray_steps[0]}" 2> /dev/null
  rm -f "$ray_stop".*
}
requeue() {
  echo "launch.sh job: requeueing; the rerun resumes from the finished parts" >&2
  scontrol requeue "$this_job"
  exit $requeue_code
}

echo "launch.sh job: Ray head at $ray_address on $SLURMD_NODENAME, $SLURM_JOB_NUM_NODES node(s)"
srun --nodes=1 --ntasks=1 --cpus-per-task="$ray_cpus" --nodelist="$SLURMD_NODENAME" \
  bash -c "$run_until_stopped" ray-head "$ray_stop.head" "$ray_cli" start --head --port="$ray_port" \
  --node-ip-address="${ray_address%:*}" --dashboard-port=$((ray_port + 1)) --dashboard-agent-listen-port=$((ray_port + 2)) \
  --include-dashboard="$ray_dashboard" --dashboard-host=127.0.0.1 "${ray_node[@]}" &
ray_steps=($!)
wait_for_ray_nodes 1 || { stop_ray; exit 1; }
if [[ $ray_dashboard == true ]]; then
  echo "launch.sh job: Ray dashboard at http://127.0.0.1:$((ray_port + 1)) on $SLURMD_NODENAME; from the login node:" \
    "ssh -N -L 8265:127.0.0.1:$((ray_port + 1)) $SLURMD_NODENAME, then open http://localhost:8265"
fi
if ((SLURM_JOB_NUM_NODES > 1)); then
  srun --nodes=$((SLURM_JOB_NUM_NODES - 1)) --ntasks=$((SLURM_JOB_NUM_NODES - 1)) --ntasks-per-node=1 \
    --cpus-per-task="$ray_cpus" --exclude="$SLURMD_NODENAME" \
    bash -c "$run_until_stopped" ray-worker "$ray_stop.workers" "$ray_cli" start --address="$ray_address" \
    --dashboard-agent-listen-port=$((ray_port + 3)) "${ray_node[@]}" &
  ray_steps+=($!)
  wait_for_ray_nodes "$SLURM_JOB_NUM_NODES" || { stop_ray; exit 1; }
fi
if ((preempted)); then stop_ray; requeue; fi
RAY
}

ray_driver() {
  cat << 'RAY'
# ---- The driver, once, on this node. Bash starts background jobs with SIGINT ignored: restore it, so that SIGUSR1
# (--signal=B:USR1@90) can interrupt the driver cleanly; it has 45 s before it is killed.
(trap - INT; RAY_ADDRESS=$ray_address exec "${command[@]}") &
driver=$!
interrupt_driver() {
  preempted=1
  echo "launch.sh job: SIGUSR1: interrupting the driver, then requeueing" >&2
  kill -INT "$driver" 2> /dev/null
  (sleep 45; kill -KILL "$driver" 2> /dev/null) &
}
trap interrupt_driver USR1
wait "$driver"
status=$?
while ((preempted)) && kill -0 "$driver" 2> /dev/null; do wait "$driver"; status=$?; done
stop_ray
if ((preempted)); then requeue; fi
exit $status
RAY
}

{
  echo "#!/bin/bash"
  directives
  preamble
  if [[ -n $data_source ]]; then stage_data; fi
  if ((ray)); then ray_body; else srun_body; fi
} > "$script"

if ((dry_run)); then
  cat "$script"
  exit 0
fi
if ! "$sbatch" --parsable "${sbatch_args[@]}" "$script" 2> "$errors"; then
  fail "sbatch refused the job: $(grep -v -e '^[[:space:]]*$' -e '^Try ' "$errors" | paste -s -d ' '); nothing was submitted"
fi
