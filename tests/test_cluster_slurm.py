"""cluster/launch.sh against a real Slurm of two nodes on this host (cluster/local_slurm.sh --nodes 2: two slurmds):
a 2-node DDP training ends with the weights of 1 process; a 2-node Ray lesion sweep runs on both nodes, loses its
worker node mid-sweep and still equals the direct sweep; a Ray-mode lesion sweep survives SIGUSR1 (requeue) and
continues where it stopped; a job array of 2-rank DDP trainings trains one network per seed, and its signalled task
alone requeues, twice, continuing each time from its newest hpc checkpoint, the only one kept; sbatch's own refusal of
an unknown option is one line.

Marked `slurm` (and `slow`): without root and Debian's slurm-wlm + munge they fail rather than skip; deselect them
with `-m "not slurm"` where no Slurm can run."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
from helpers_train import (
    DETERMINISTIC,
    ROOT,
    assert_trained_alike,
    session_tiny_data,
    session_untrained_checkpoint,
    tiny_config,
)

from common.io import readable_parquet
from common.ray_runner import unit_node
from lightning_modules.checkpoint import load_model
from lightning_modules.config import write_config
from lightning_modules.train import train
from lightning_modules.vgg import filters_per_layer
from sweeps.distributed import training_images
from sweeps.engine import lesion_sweep
from sweeps.ranking import oneshot_ranking

LAUNCH = ROOT / "cluster" / "launch.sh"
LOCAL_SLURM = ROOT / "cluster" / "local_slurm.sh"
pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.root]


def scontrol_jobs(job_id: str, env: dict) -> list[dict[str, str]]:
    """`scontrol show job` as key -> value, one dict per job record (an array job has one per index)."""
    out = subprocess.run(
        ["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True, check=True
    ).stdout
    return [dict(re.findall(r"(\w+)=(\S*)", record)) for record in out.split("\n\n") if record.strip()]


def scontrol_job(job_id: str, env: dict) -> dict[str, str]:
    return scontrol_jobs(job_id, env)[0]


def wait_for(condition, timeout: float, what: str, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def ended(job: str, env: dict) -> bool:
    return all(
        record["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for record in scontrol_jobs(job, env)
    )


def signal_until_requeued(job: str, env: dict, batch_shell: bool, restarts: int = 1) -> None:
    """Send SIGUSR1 as --signal=USR1@90 (to the job's steps) or --signal=B:USR1@90 (to the batch shell) does and wait
    until the job has requeued itself (for the `restarts`-th time)."""
    subprocess.run(["scancel", "--signal=USR1", *(["--batch"] if batch_shell else []), job], env=env, check=True)
    wait_for(lambda: int(scontrol_job(job, env).get("Restarts", 0)) >= restarts, 180, "the requeue")


def start_now(job: str, env: dict) -> None:
    """Start a requeued job (an id, or ARRAY_INDEX) at once instead of after Slurm's requeue delay, once its previous
    run is gone from the node.

    slurmd refuses ("job credential revoked") a rerun whose credential is from the second of the requeue or before
    (it compares whole seconds), hence the 2 s."""
    job_id = scontrol_job(job, env)["JobId"]
    wait_for(lambda: not processes_with(f"slurmstepd: [{job_id}."), 120, "the previous run's steps to end")
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, check=False)


def processes_with(text: str) -> list[psutil.Process]:
    """The processes whose command line holds `text`."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if text in " ".join(process.info["cmdline"] or []):
                found.append(process)
        except psutil.Error:
            continue
    return found


def job_log(jobs: Path) -> str:
    return "".join(path.read_text() for path in sorted(jobs.glob("*.out")))


def slurm_env(ports: int) -> dict[str, str]:
    """The environment of a private local Slurm whose ports are free (`ports` of them from a random base below Ray's
    ports, 25000 and up), W&B offline, torch on one thread."""
    if shutil.which("slurmctld") is None or os.geteuid() != 0:
        pytest.fail(
            "the Slurm tests need root and Debian's slurm-wlm + munge (scripts/setup_system.sh); "
            "deselect them with -m 'not slurm' where no Slurm can run"
        )
    env = {
        **os.environ,
        "SLURM_LOCAL_PORT": str(random.randrange(20000, 24990, ports)),
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("SPECIALIZE_SITE", None)
    return env


@pytest.fixture(scope="module")
def local_slurm(tmp_path_factory):
    """A private Slurm of two nodes, n1 and n2 (two slurmds on this host; own state dir and ports); yields the
    environment that talks to it."""
    state = tmp_path_factory.mktemp("slurm")
    env = slurm_env(ports=4)
    subprocess.run([str(LOCAL_SLURM), "start", "--nodes", "2", str(state)], env=env, check=True, timeout=120)
    yield {**env, "SLURM_CONF": str(state / "slurm.conf")}
    subprocess.run([str(LOCAL_SLURM), "stop", str(state)], env=env, check=False)


def nodes_of(env: dict) -> list[str]:
    """`sinfo`'s nodes and their states, `name state` each."""
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split("\n")[:-1]


def test_local_slurm_runs_two_slurmds_as_two_nodes_and_one_node_by_default(local_slurm, tmp_path):
    assert nodes_of(local_slurm) == ["n1 idle", "n2 idle"]
    config = subprocess.run(["scontrol", "show", "config"], env=local_slurm, capture_output=True, text=True).stdout
    assert re.search(r"MULTIPLE_SLURMD\s+= Yes", config)

    env = slurm_env(ports=2)  # the default: one node, this host
    try:
        subprocess.run([str(LOCAL_SLURM), "start", str(tmp_path)], env=env, check=True, timeout=120)
        assert nodes_of({**env, "SLURM_CONF": str(tmp_path / "slurm.conf")}) == [
            f"{socket.gethostname().split('.')[0]} idle"
        ]
    finally:
        subprocess.run([str(LOCAL_SLURM), "stop", str(tmp_path)], env=env, check=False)


def submit(env: dict, *args: str) -> str:
    return subprocess.run(
        [str(LAUNCH), *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_two_node_ddp_one_rank_per_node_ends_with_the_weights_of_one_process(local_slurm, tmp_path_factory, tmp_path):
    env = {**local_slurm, "SPECIALIZE_SLURM_DIR": str(tmp_path / "jobs")}
    data = session_tiny_data(tmp_path_factory)
    config = tiny_config(data, tmp_path, [*DETERMINISTIC, "output.run_name=two_nodes", "trainer.strategy=ddp"])
    write_config(config, tmp_path / "config")
    job = submit(
        env,
        "--nodes",
        "2",
        "--gpus-per-node",
        "0",
        "--cpus-per-task",
        "1",
        "--time",
        "10",
        "--",
        sys.executable,
        "-m",
        "specialize.cli",
        "train",
        "--config",
        str(tmp_path / "config/config.yaml"),
    )
    single = train(tiny_config(data, tmp_path, [*DETERMINISTIC, "output.run_name=single"]))  # meanwhile, here
    wait_for(lambda: ended(job, env), 300, "the job to end")

    log = job_log(tmp_path / "jobs")
    record = scontrol_job(job, env)
    assert record["JobState"] == "COMPLETED", log[-3000:]
    assert (record["NodeList"], record["NumNodes"], record["NumTasks"]) == ("n[1-2]", "2", "2")
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log and "distributed_backend=gloo" in log
    manifest = json.loads((config.run_dir / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["slurm_job_id"] == job
    assert_trained_alike(single, config.run_dir, steps=2 * 384 // 32)


SWEEP = [
    "--images-per-task",
    "12",
    "--layers",
    "conv1_1",
    "conv3_1",
    "conv5_3",
    "--filters-per-task",
    "2",
    "--batch-size",
    "8",
    "--lesions-per-pass",
    "1",
    "--no-progress",
]


@pytest.fixture(scope="module")
def sweep_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """The data directory and the untrained tiny checkpoint that the Ray tests sweep (read only)."""
    return session_untrained_checkpoint(tmp_path_factory, train_per_class=6, test_per_class=2)


def test_ray_lesion_job_with_node_local_data_requeues_on_sigusr1_and_equals_the_direct_sweep(
    local_slurm, sweep_inputs, tmp_path
):
    data, checkpoint = sweep_inputs
    site = tmp_path / "site.env"
    site.write_text(f"SITE_PARTITION=\nSITE_ACCOUNT=\nSITE_QOS=\nSITE_ACTIVATE=\nSITE_SCRATCH={tmp_path}/scratch\n")
    env = {**local_slurm, "SPECIALIZE_SLURM_DIR": str(tmp_path / "jobs")}
    out = tmp_path / "sweep"
    lesion = [sys.executable, "-m", "specialize.cli", "lesion", "--checkpoint", str(checkpoint), "--out"]
    job = submit(
        env,
        "--site",
        str(site),
        "--gpus-per-node",
        "0",
        "--cpus-per-task",
        "2",
        "--time",
        "15",
        "--",
        *lesion,
        str(out),
        "--data",
        str(data),
        *SWEEP,
    )
    chunks = out / "chunks" / "oneshot"
    wait_for(lambda: len(list(chunks.glob("*.parquet"))) >= 3, 300, "three chunks")
    signal_until_requeued(job, env, batch_shell=True)  # what --signal=B:USR1@90 does
    before = {path.name: path.stat().st_mtime_ns for path in chunks.glob("*.parquet")}
    assert 3 <= len(before) < 26 and not (out / "filter_losses.parquet").exists()
    start_now(job, env)
    wait_for(lambda: ended(job, env), 400, "the job to end")

    log = job_log(tmp_path / "jobs")
    assert scontrol_job(job, env)["JobState"] == "COMPLETED", (scontrol_job(job, env), log[-3000:])
    assert "interrupted; rerun the same command to resume" in log and log.count("Ray head at") == 2
    # The driver joined the job's cluster (its port comes from the job id), rather than starting a Ray of its own.
    port = 25000 + 4 * (int(job) % 1900)
    assert json.loads((out / "config.json").read_text())["address"].endswith(f":{port}")
    assert "Started a local Ray instance" not in log
    after = {path.name: path.stat().st_mtime_ns for path in chunks.glob("*.parquet")}
    assert len(after) == 26 and all(after[name] == mtime for name, mtime in before.items())  # not redone
    [stage] = (tmp_path / "scratch" / "specialize-data").glob("data-*[0-9]")
    assert json.loads((out / "manifest.json").read_text())["data"] == str(stage)  # read from the node-local copy
    assert not processes_with(f"/tmp/ray-{job}")  # Ray was stopped
    shutil.rmtree(f"/tmp/ray-{job}", ignore_errors=True)  # its logs

    # The same sweep run directly, in this process: the same images, batches and lesions per pass.
    loaded = load_model(checkpoint)
    direct = lesion_sweep(
        loaded.model, training_images(loaded, data, 12, seed=0), layers=SWEEP[3:6], batch_size=8, lesions_per_pass=1
    )
    pd.testing.assert_frame_equal(pd.read_parquet(out / "filter_losses.parquet"), direct)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "ranking.parquet"), oneshot_ranking(direct))


def chunk_nodes(chunks: Path) -> dict[str, dict[str, str]]:
    """Where each finished chunk under `chunks` ran, by file name (`run_units` records it in the file)."""
    return {path.name: unit_node(path) for path in sorted(chunks.glob("*.parquet")) if readable_parquet(path)}


def kill_ray_worker_node(job: str) -> None:
    """SIGKILL the Ray of the job's worker node at once, as a lost node: its `ray start` and all it started."""
    [start] = [  # `ray start --address=...` itself, not the srun and bash lines that hold its words
        process
        for process in processes_with(f"--temp-dir=/tmp/ray-{job}")
        if process.name() == "ray" and any(word.startswith("--address=") for word in process.cmdline())
    ]
    doomed = [start, *start.children(recursive=True)]
    for process in doomed:
        process.kill()
    psutil.wait_procs(doomed, timeout=30)


def test_two_node_ray_sweep_runs_on_both_nodes_survives_losing_the_worker_and_equals_the_direct_sweep(
    local_slurm, sweep_inputs, tmp_path
):
    data, checkpoint = sweep_inputs
    env = {**local_slurm, "SPECIALIZE_SLURM_DIR": str(tmp_path / "jobs")}
    out = tmp_path / "sweep"
    # Every conv layer, a filter per chunk: 264 chunks of about 0.1 s, time to lose the worker node mid-sweep after
    # its first chunks (its first task starts some 6 s after the head's: a new worker process imports torch).
    sweep = [*SWEEP[:2], "--filters-per-task", "1", *SWEEP[8:]]
    loaded = load_model(checkpoint)
    total = sum(filters_per_layer(loaded.model).values())
    lesion = [sys.executable, "-m", "specialize.cli", "lesion", "--checkpoint", str(checkpoint), "--data", str(data)]
    # one CPU per Ray node (--cpus-per-task 1) and one per sweep task: the head alone cannot run two chunks at once
    job = submit(
        env,
        "--nodes",
        "2",
        "--gpus-per-node",
        "0",
        "--cpus-per-task",
        "1",
        "--time",
        "10",
        "--",
        *lesion,
        "--out",
        str(out),
        *sweep,
    )
    chunks = out / "chunks" / "oneshot"
    wait_for(
        lambda: {"n1", "n2"} <= {where["node"] for where in chunk_nodes(chunks).values()},
        300,
        "chunks from both nodes",
        poll=0.2,
    )
    kill_ray_worker_node(job)
    at_kill = chunk_nodes(chunks)
    assert len(at_kill) < total, "the sweep ended before its worker node was lost: make it longer"
    wait_for(lambda: ended(job, env), 300, "the job to end")

    log = job_log(tmp_path / "jobs")
    record = scontrol_job(job, env)
    assert (record["JobState"], record["Restarts"]) == ("COMPLETED", "0"), log[-3000:]  # finished on the head
    assert "Ray head at" in log and "2 node(s)" in log
    ran_on = chunk_nodes(chunks)
    assert len(ran_on) == total and len({where["ray_node_id"] for where in ran_on.values()}) == 2
    on_worker = [name for name, where in ran_on.items() if where["node"] == "n2"]
    # after the loss, the head computed the rest (the worker's one CPU had at most one chunk on its way back)
    assert len(on_worker) <= sum(where["node"] == "n2" for where in at_kill.values()) + 1
    assert not processes_with(f"/tmp/ray-{job}")  # Ray was stopped
    shutil.rmtree(f"/tmp/ray-{job}", ignore_errors=True)  # its logs

    direct = lesion_sweep(loaded.model, training_images(loaded, data, 12, seed=0), batch_size=8, lesions_per_pass=1)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "filter_losses.parquet"), direct)  # the same sweep, here


def test_array_of_ddp_jobs_trains_a_network_per_seed_and_a_preempted_task_alone_requeues_and_continues(
    local_slurm, tmp_path_factory, tmp_path
):
    """Seeds 0 and 1 as an array, each task a 2-rank DDP training (a node each). One task is pre-empted twice
    (SIGUSR1, as --signal=USR1@90 sends it): every rank saves at the same batch, the task alone requeues, each rerun
    continues from the newest hpc checkpoint, the one kept, and the run ends with no batch lost or repeated."""
    env = {**local_slurm, "SPECIALIZE_SLURM_DIR": str(tmp_path / "jobs")}
    config = tiny_config(session_tiny_data(tmp_path_factory), tmp_path, ["trainer.epochs=4", "trainer.strategy=ddp"])
    write_config(config, tmp_path / "config")
    train_command = [sys.executable, "-m", "specialize.cli", "train", "--config", str(tmp_path / "config/config.yaml")]
    array = submit(
        env,
        "--array",
        "0-1",
        "--gpus-per-node",
        "0",
        "--ntasks-per-node",
        "2",
        "--cpus-per-task",
        "1",
        "--",
        *train_command,
    )
    wait_for(lambda: [r["JobState"] for r in scontrol_jobs(array, env)] == ["RUNNING"] * 2, 120, "both tasks to run")
    # Signal the task whose own job id is the array's: `scontrol requeue <that id>` requeues every task of the array.
    [index] = [record["ArrayTaskId"] for record in scontrol_jobs(array, env) if record["JobId"] == array]
    task, other = f"{array}_{index}", f"{array}_{1 - int(index)}"
    run, other_run = tmp_path / f"tiny_face_object-seed{index}", tmp_path / f"tiny_face_object-seed{1 - int(index)}"
    task_log = tmp_path / "jobs" / f"specialize-{task}.out"
    wait_for((run / "checkpoints" / "last.ckpt").exists, 300, "the first epoch's checkpoint")
    for restart in (1, 2):
        signal_until_requeued(task, env, batch_shell=False, restarts=restart)
        start_now(task, env)
        restored = f"Restoring states from the checkpoint path at {run / f'hpc_ckpt_{restart}.ckpt'}"
        wait_for(
            lambda text=restored: text in task_log.read_text(), 300, f"the rerun to continue from hpc_ckpt_{restart}"
        )
    wait_for(lambda: ended(array, env), 300, "both tasks to end")

    records = {record["ArrayTaskId"]: record for record in scontrol_jobs(array, env)}
    assert [(r["JobState"], r["Restarts"]) for r in (records[index], records[str(1 - int(index))])] == [
        ("COMPLETED", "2"),
        ("COMPLETED", "0"),  # the other task ran once, untouched
    ], job_log(tmp_path / "jobs")[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in task_log.read_text()
    [saved] = run.glob("hpc_ckpt_*.ckpt")
    assert saved.name == "hpc_ckpt_2.ckpt"  # the newest only: hpc_ckpt_1 went once hpc_ckpt_2 was written
    state = torch.load(saved, map_location="cpu", weights_only=True)
    in_epoch = state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"]
    steps_per_epoch = (state["global_step"] - in_epoch) // state["epoch"]
    assert steps_per_epoch == 384 // 32 and 0 < in_epoch < steps_per_epoch  # saved mid-epoch
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 4 and summary["global_step"] == 4 * steps_per_epoch  # no batch lost or repeated
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["slurm_job_id"] == records[index]["JobId"]
    assert "Restoring states" not in (tmp_path / "jobs" / f"specialize-{other}.out").read_text()
    assert (
        not list(other_run.glob("hpc_ckpt_*")) and json.loads((other_run / "summary.json").read_text())["epochs"] == 4
    )
    weights = []
    for seed in (0, 1):
        seed_run = tmp_path / f"tiny_face_object-seed{seed}"
        assert json.loads((seed_run / "config.json").read_text())["seed"] == seed
        weights.append(torch.load(seed_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    assert any(not torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_an_option_sbatch_does_not_know_is_one_line_and_submits_nothing(local_slurm, tmp_path):
    env = {**local_slurm, "SPECIALIZE_SLURM_DIR": str(tmp_path / "jobs")}
    result = subprocess.run(
        [str(LAUNCH), "--nodez", "2", "--gpus-per-node", "0", "--", "true"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "sbatch refused the job" in result.stderr and "nodez" in result.stderr
    assert subprocess.run(["squeue", "--noheader"], env=env, capture_output=True, text=True).stdout.strip() == ""
