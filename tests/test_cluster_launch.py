"""cluster/launch.sh without a cluster: what sbatch receives (a fake sbatch records it), the job script run with a fake
srun (threads, requeue, seeds of an array, the node-local data copy), the Ray job script, and one-line errors."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_train import ROOT

LAUNCH = ROOT / "cluster" / "launch.sh"
TINY = str(ROOT / "configs" / "tiny_face_object.yaml")
TRAIN = [sys.executable, "-m", "specialize.cli", "train", "--config", TINY]

FAKES = {
    # records its arguments and the job script, answers with a job id
    "sbatch": 'printf "%s\\n" "$@" > "$FAKE_LOG/sbatch.argv"; cp "${@: -1}" "$FAKE_LOG/job.sbatch"; echo 4242',
    # records every call with the task's OMP_NUM_THREADS and MASTER_ADDR; runs `bash -c` steps (the data copy), not
    # the command
    "srun": (
        '{ echo "OMP_NUM_THREADS=${OMP_NUM_THREADS-unset}"; echo "MASTER_ADDR=${MASTER_ADDR-unset}"; '
        'printf "%s\\n" "$@"; echo ---; } >> "$FAKE_LOG/srun.log"\n'
        "while [[ $1 == -* ]]; do shift; done\n"
        'if [[ $1 == bash ]]; then exec "$@"; fi\n'
        'exit "${FAKE_SRUN_EXIT:-0}"'
    ),
    # answers `show node` as Slurm does (the node's address), records the rest (requeues)
    "scontrol": (
        'if [[ $1 == show ]]; then echo "NodeName=$3 Arch=x86_64"; echo "   NodeAddr=10.0.0.7 NodeHostName=$3"; fi\n'
        "[[ $1 == show ]] && exit\n"
        'printf "%s\\n" "$*" >> "$FAKE_LOG/scontrol.log"'
    ),
}


@pytest.fixture
def fake_slurm(tmp_path) -> dict[str, str]:
    """An environment whose PATH starts with fake sbatch, srun and scontrol that log under tmp_path/log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    log.mkdir()
    for name, body in FAKES.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SLURM_", "SPECIALIZE_SITE"))}
    env.pop("OMP_NUM_THREADS", None)
    return {
        **env,
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{env['PATH']}",  # `specialize` plans its own job
        "FAKE_LOG": str(log),
        "SPECIALIZE_SLURM_DIR": str(tmp_path / "jobs"),
    }


def launch(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LAUNCH), *args], cwd=ROOT, env=env, capture_output=True, text=True, check=check, timeout=120
    )


def directives(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]


def run_job(env: dict, **slurm: str) -> int:
    """Run the submitted job script as Slurm would start it on the first node, with the fakes on PATH."""
    job_env = {**env, "SLURM_JOB_ID": "4242", "SLURM_JOB_NUM_NODES": "1", "SLURMD_NODENAME": "node1", **slurm}
    return subprocess.run(["bash", str(Path(env["FAKE_LOG"]) / "job.sbatch")], env=job_env, timeout=120).returncode


def srun_calls(env: dict) -> list[list[str]]:
    """Each srun call: [OMP_NUM_THREADS=..., MASTER_ADDR=..., argument, ...]."""
    text = (Path(env["FAKE_LOG"]) / "srun.log").read_text()
    return [call.strip("\n").split("\n") for call in text.split("---\n") if call.strip()]


def test_training_job_gets_its_sbatch_arguments_threads_and_requeue(fake_slurm):
    # 2 nodes of 4 GPUs: the node count and the ranks per node differ, so that a swap of the two shows
    result = launch(
        fake_slurm, "--nodes", "2", "--gpus-per-node", "4", "--time", "1:00:00", "--", *TRAIN, "data.num_workers=3"
    )
    log = Path(fake_slurm["FAKE_LOG"])
    script_path = Path(fake_slurm["SPECIALIZE_SLURM_DIR"]) / Path((log / "sbatch.argv").read_text().split()[-1]).name
    assert result.stdout.strip() == "4242"
    assert (log / "sbatch.argv").read_text().splitlines() == ["--parsable", "--time", "1:00:00", str(script_path)]
    assert directives((log / "job.sbatch").read_text()) == [
        "--job-name=specialize",
        "--nodes=2",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--cpus-per-task=4",  # the config's 3 loader workers + the rank
        "--signal=USR1@90",
        "--requeue",
        "--open-mode=append",
        f"--output={script_path.parent}/%x-%j.out",
    ]

    assert run_job(fake_slurm, SLURM_CPUS_PER_TASK="4", FAKE_SRUN_EXIT="3") == 3
    [call] = srun_calls(fake_slurm)
    # DDP's rendezvous is the first node at its Slurm NodeAddr (names of some clusters do not resolve)
    assert call == [
        "OMP_NUM_THREADS=4",
        "MASTER_ADDR=10.0.0.7",
        *TRAIN,
        "data.num_workers=3",
        "trainer.devices=4",
        "trainer.num_nodes=2",
    ]
    assert (log / "scontrol.log").read_text() == "requeue 4242\n"  # exit code 3: saved on SIGUSR1, continue

    (log / "scontrol.log").unlink()
    assert run_job({**fake_slurm, "OMP_NUM_THREADS": "2", "MASTER_ADDR": "head"}, SLURM_CPUS_PER_TASK="4") == 0
    assert srun_calls(fake_slurm)[-1][:2] == ["OMP_NUM_THREADS=2", "MASTER_ADDR=head"]  # values already set are kept
    assert not (log / "scontrol.log").exists()


def test_array_job_trains_each_seed_into_its_own_run(fake_slurm):
    launch(fake_slurm, "--array", "0-4%2", "--gpus-per-node", "0", "--cpus-per-task", "2", "--", *TRAIN)
    script = (Path(fake_slurm["FAKE_LOG"]) / "job.sbatch").read_text()
    assert "--array=0-4%2" in directives(script) and any(d.endswith("/%x-%A_%a.out") for d in directives(script))
    array_task = {"SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "3", "FAKE_SRUN_EXIT": "3"}
    assert run_job(fake_slurm, **array_task) == 3  # pre-empted: requeue this task, not the array (4242 may be both)
    assert srun_calls(fake_slurm)[-1][-2:] == ["seed=3", "output.run_name=tiny_face_object-seed3"]
    assert (Path(fake_slurm["FAKE_LOG"]) / "scontrol.log").read_text() == "requeue 4240_3\n"

    launch(fake_slurm, "--array", "1,7", "--gpus-per-node", "0", "--", *TRAIN, "output.run_name=mine")
    assert run_job(fake_slurm, SLURM_ARRAY_JOB_ID="4240", SLURM_ARRAY_TASK_ID="7") == 0
    assert srun_calls(fake_slurm)[-1][-2:] == ["seed=7", "output.run_name=mine-seed7"]


def test_ray_job_script_for_two_nodes_starts_head_and_workers_and_one_driver(fake_slurm):
    script = launch(
        fake_slurm,
        "--nodes",
        "2",
        "--gpus-per-node",
        "4",
        "--cpus-per-task",
        "16",
        "--dry-run",
        "--",
        "specialize",
        "lesion",
        "--checkpoint",
        "c.ckpt",
        "--data",
        "d",
        "--out",
        "o",
    ).stdout
    assert directives(script)[:6] == [
        "--job-name=specialize",
        "--nodes=2",
        "--ntasks-per-node=1",
        "--gpus-per-node=4",
        "--cpus-per-task=16",
        "--signal=B:USR1@90",
    ]
    lines = script.splitlines()

    def line_of(text: str) -> int:
        [index] = [i for i, line in enumerate(lines) if text in line and not line.lstrip().startswith("#")]
        return index

    head = line_of("start --head")
    assert '--nodelist="$SLURMD_NODENAME"' in lines[head - 1] and '--num-gpus="$ray_gpus"' in script
    workers = line_of('start --address="$ray_address"')
    assert '--exclude="$SLURMD_NODENAME"' in lines[workers - 1]
    assert "--nodes=$((SLURM_JOB_NUM_NODES - 1))" in lines[workers - 2]
    command = line_of("command=(")
    assert lines[command] == 'command=(specialize lesion --checkpoint c.ckpt --data d --out o --address "$ray_address")'
    driver = line_of('exec "${command[@]}"')
    all_joined = line_of('wait_for_ray_nodes "$SLURM_JOB_NUM_NODES"')
    assert head < line_of("wait_for_ray_nodes 1 ||") < workers < all_joined < command < driver
    assert lines.index("stop_ray") > driver  # Ray stops after the driver
    assert 'srun "${command[@]}"' not in script  # one driver, not one per task
    assert "ray_gpus=4 " in script and "RAY_ADDRESS=$ray_address" in lines[driver]


RAY_FAKES = {
    # the command's environment: `specialize` (plans with the real CLI, records the driver's call and how many nodes
    # had joined when it started), `ray` (records `ray start`, a worker's a second late, so that a driver not waiting
    # for the workers starts before them; the head listens on its port until stopped) and `python` (the node address;
    # how many nodes joined: those that ran `ray start`)
    "specialize": (
        'if [[ $1 == cluster ]]; then exec "$REAL_PYTHON" -m specialize.cli "$@"; fi\n'
        '{ echo "joined=$(grep -c "^start" "$FAKE_LOG/ray.log")"; echo "RAY_ADDRESS=$RAY_ADDRESS"; '
        'printf "%s\\n" "$@"; } >> "$FAKE_LOG/driver.log"'
    ),
    "ray": (
        "if [[ $2 == --address=* ]]; then sleep 1; fi\n"
        'printf "%s\\n" "$*" >> "$FAKE_LOG/ray.log"\n'
        'for word in "$@"; do [[ $word == --port=* ]] && port=${word#--port=}; done\n'
        'if [[ -n ${port:-} ]]; then exec "$REAL_PYTHON" -c "import socket, sys, time\n'
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        's.bind((\'127.0.0.1\', int(sys.argv[1]))); s.listen(); time.sleep(600)" "$port"; fi\n'
        "exec sleep 600"
    ),
    "python": (
        'if [[ $2 == *get_node_ip_address* ]]; then echo 127.0.0.1; exit; fi\ngrep -c "^start" "$FAKE_LOG/ray.log"'
    ),
}


@pytest.mark.parametrize("nodes", [1, 2])
def test_ray_job_script_run_starts_one_head_a_worker_per_other_node_and_one_driver(fake_slurm, tmp_path, nodes):
    bin_dir = tmp_path / "env"
    bin_dir.mkdir()
    for name, body in RAY_FAKES.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**fake_slurm, "REAL_PYTHON": sys.executable}
    lesion = [str(bin_dir / "specialize"), "lesion", "--checkpoint", "c.ckpt", "--data", "d", "--out", "o"]
    launch(env, "--nodes", str(nodes), "--gpus-per-node", "0", "--cpus-per-task", "2", "--", *lesion)
    job = {"SLURM_JOB_ID": "4243", "SLURM_JOB_NUM_NODES": str(nodes), "SLURM_CPUS_PER_TASK": "2"}
    assert run_job(env, **job) == 0
    port = 25000 + 4 * (4243 % 1900)
    log = Path(env["FAKE_LOG"])
    starts = (log / "ray.log").read_text().splitlines()
    assert len(starts) == nodes and starts[0].startswith(f"start --head --port={port} --node-ip-address=127.0.0.1")
    assert all(start.startswith(f"start --address=127.0.0.1:{port} ") for start in starts[1:])
    assert all("--num-cpus=2 --num-gpus=0" in start for start in starts)
    steps = [call[2:] for call in srun_calls(env)]
    assert steps[0][:4] == ["--nodes=1", "--ntasks=1", "--cpus-per-task=2", "--nodelist=node1"]
    if nodes == 1:
        assert len(steps) == 1  # no worker step on a one-node job
    else:
        [workers] = steps[1:]  # one step starts every other node's worker, none on the head's node
        assert workers[:5] == [
            f"--nodes={nodes - 1}",
            f"--ntasks={nodes - 1}",
            "--ntasks-per-node=1",
            "--cpus-per-task=2",
            "--exclude=node1",
        ]
    # the command ran once, on the head, joined to the job's cluster, after every node had joined it
    assert (log / "driver.log").read_text().splitlines() == [
        f"joined={nodes}",
        f"RAY_ADDRESS=127.0.0.1:{port}",
        *lesion[1:],
        "--address",
        f"127.0.0.1:{port}",
    ]


def test_the_cli_says_which_commands_run_on_ray_how_seeds_go_to_jobs_and_which_data_to_copy(fake_slurm, tmp_path):
    def command_line(*args: str) -> str:
        script = launch(fake_slurm, "--dry-run", *args).stdout
        return next(line for line in script.splitlines() if line.startswith("command=("))

    study = ["specialize", "study", "--config", "studies/tiny.yaml"]
    assert command_line("--array", "0-2", "--", *study) == (
        'command=(specialize study --config studies/tiny.yaml --seeds="$SLURM_ARRAY_TASK_ID" --address "$ray_address")'
    )
    data = tmp_path / "data"
    data.mkdir()
    site = site_file(tmp_path / "site.env", **{**COMPLETE_SITE, "SITE_SCRATCH": str(tmp_path / "scratch")})
    activations = ["specialize", "activations", "--checkpoint", "c.ckpt", f"--data={data}", "--out", "o"]
    assert command_line("--site", str(site), "--", *activations) == (  # a Ray command: --address, one task per node
        'command=(specialize activations --checkpoint c.ckpt --data="$stage_dir" --out o --address "$ray_address")'
    )
    plan = subprocess.run(
        ["specialize", "cluster", "plan", "--", "decode", "--checkpoint", "c.ckpt", "--data", "d", "--out", "o"],
        env=fake_slurm,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert plan[:4] == ["needs_ray=1", "data_dir=d", "data_word=4", "data_setting=--data="]


def test_ray_dashboard_starts_with_the_head_of_a_ray_job(fake_slurm):
    lesion = ["specialize", "lesion", "--checkpoint", "c.ckpt", "--data", "d", "--out", "o"]
    script = launch(fake_slurm, "--ray-dashboard", "--gpus-per-node", "0", "--dry-run", "--", *lesion).stdout
    [head] = [line for line in script.splitlines() if "--include-dashboard=" in line]
    assert '--include-dashboard="$ray_dashboard" --dashboard-host=127.0.0.1' in head
    assert "ray_dashboard=true " in script and "--dashboard-port=$((ray_port + 1))" in script
    assert "launch.sh job: Ray dashboard at http://127.0.0.1:$((ray_port + 1)) on $SLURMD_NODENAME" in script
    default = launch(fake_slurm, "--gpus-per-node", "0", "--dry-run", "--", *lesion).stdout
    assert "ray_dashboard=false " in default  # off unless asked for


def site_file(path: Path, **values: str) -> Path:
    lines = [f"{key}={value}" for key, value in values.items()]
    path.write_text("# a cluster\n" + "\n".join(lines) + "\n")
    return path


def test_site_file_sets_partition_and_environment_and_copies_the_data_to_node_local_scratch(fake_slurm, tmp_path):
    data = tmp_path / "my data"  # a space, and a name any encoding may hold
    (data / "face").mkdir(parents=True)
    (data / "manifest.json").write_text('{"tasks": {}}')
    (data / "face" / "train.beton").write_bytes(b"\x00" * 1000)
    scratch = tmp_path / "local"
    site = site_file(
        tmp_path / "site.env",
        SITE_PARTITION="gpu",
        SITE_ACCOUNT="lab",
        SITE_QOS="",
        SITE_ACTIVATE="export ACTIVATED=yes",
        SITE_SCRATCH=f'"{scratch}/$USER"',
    )
    launch(fake_slurm, "--site", str(site), "--gpus-per-node", "0", "--", *TRAIN, f"data.dir={data}")
    script = (Path(fake_slurm["FAKE_LOG"]) / "job.sbatch").read_text()
    assert "--partition=gpu" in directives(script) and "--account=lab" in directives(script)
    assert not any(d.startswith("--qos") for d in directives(script)) and "\nexport ACTIVATED=yes\n" in script

    assert run_job({**fake_slurm, "USER": "me"}) == 0
    copy_call, train_call = srun_calls(fake_slurm)
    assert "--ntasks-per-node=1" in copy_call  # one copy per node
    [stage] = (scratch / "me" / "specialize-data").glob("my data-*[0-9]")
    assert f"data.dir={stage}" in train_call and f"data.dir={data}" not in train_call
    assert (stage / "face" / "train.beton").read_bytes() == b"\x00" * 1000 and (stage / ".complete").is_file()

    (stage / "face" / "kept").touch()  # a later job on the node reuses the copy ...
    assert run_job({**fake_slurm, "USER": "me"}) == 0 and (stage / "face" / "kept").exists()
    (data / "manifest.json").write_text('{"tasks": {"face": {}}}')  # ... until the data directory changes
    assert run_job({**fake_slurm, "USER": "me"}) == 0
    assert not (stage / "face" / "kept").exists() and (stage / "manifest.json").read_text() == '{"tasks": {"face": {}}}'


COMPLETE_SITE = {"SITE_PARTITION": "", "SITE_ACCOUNT": "", "SITE_QOS": "", "SITE_ACTIVATE": "", "SITE_SCRATCH": ""}
LESION = ["specialize", "lesion", "--checkpoint", "c.ckpt", "--data", "d", "--out", "o"]


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--gpus-per-node", "0", "--", *LESION], {"SBATCH": "/no/sbatch"}, "no sbatch on this host"),
        (["--nodes", "2", *LESION], {}, "no command: put it after --"),
        (["--ray", "--"], {}, "no command after --"),
        (["--nodes", "two", "--", *LESION], {}, "--nodes takes a whole number"),
        (["--ntasks-per-node", "4", "--", *LESION], {}, "one Slurm task per node"),
        (["--", *LESION, "--address", "h:1"], {}, "drop --address"),
        (["--", *LESION, "--ray-dashboard"], {}, "put --ray-dashboard before --"),
        (["--ray-dashboard", "--", *TRAIN], {}, "--ray-dashboard is for Ray jobs"),
        (["--array", "0-1", "--", *LESION], {}, "`specialize lesion` takes no per-job seed"),
        (["--array", "0-1", "--", *TRAIN, "seed=2"], {}, "drop seed="),
        (["--", *TRAIN, "--bad"], {}, "cannot plan the job: specialize train: error: unrecognized arguments: --bad"),
        (["--site", "SITE", "--", *LESION], {"drop": "SITE_QOS"}, "does not set SITE_QOS"),
        (["--site", "SITE", "--", *LESION], {"add": "SITE_PARTITON=gpu"}, "unknown key SITE_PARTITON"),
        (
            ["--site", "SITE", "--", *TRAIN, "data.dir=/no/such/data"],
            {"add": "SITE_SCRATCH=/tmp"},
            "/no/such/data does not exist",
        ),
    ],
)
def test_bad_input_gives_one_line_and_submits_nothing(fake_slurm, tmp_path, args, env, message):
    values = dict(COMPLETE_SITE)
    values.pop(env.pop("drop", ""), None)
    key, _, value = env.pop("add", "=").partition("=")
    if key:
        values[key] = value
    site = site_file(tmp_path / "site.env", **values)
    result = launch({**fake_slurm, **env}, *[str(site) if arg == "SITE" else arg for arg in args], check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("launch.sh: ")
    assert not (Path(fake_slurm["FAKE_LOG"]) / "sbatch.argv").exists()
