"""cluster/launch.sh against a real single-node Slurm (cluster/local_slurm.sh): a 2-task DDP job and a Ray-mode lesion
sweep survive SIGUSR1 (requeue) and continue where they stopped; a job array trains one network per seed; sbatch's
own refusal of an unknown option is one line."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
from helpers_train import ROOT, session_tiny_data, tiny_config, untrained_checkpoint

from lightning_modules.checkpoint import load_model
from lightning_modules.config import write_config
from sweeps.distributed import training_images
from sweeps.engine import lesion_sweep
from sweeps.ranking import oneshot_ranking

LAUNCH = ROOT / "cluster" / "launch.sh"
pytestmark = pytest.mark.slow


def scontrol_jobs(job_id: str, env: dict) -> list[dict[str, str]]:
    """`scontrol show job` as key -> value, one dict per job record (an array job has one per index)."""
    out = subprocess.run(
        ["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True, check=True
    ).stdout
    return [dict(re.findall(r"(\w+)=(\S*)", record)) for record in out.split("\n\n") if record.strip()]


def scontrol_job(job_id: str, env: dict) -> dict[str, str]:
    return scontrol_jobs(job_id, env)[0]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


def ended(job: str, env: dict) -> bool:
    return all(
        record["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for record in scontrol_jobs(job, env)
    )


def signal_until_requeued(job: str, env: dict, batch_shell: bool) -> None:
    """Send SIGUSR1 as --signal=USR1@90 (to the job's steps) or --signal=B:USR1@90 (to the batch shell) does and wait
    until the job has requeued itself."""
    subprocess.run(["scancel", "--signal=USR1", *(["--batch"] if batch_shell else []), job], env=env, check=True)
    wait_for(lambda: int(scontrol_job(job, env).get("Restarts", 0)) >= 1, 180, "the requeue")


def start_now(job: str, env: dict) -> None:
    """Start a requeued job at once instead of after Slurm's requeue delay, once its first run is gone from the node.

    slurmd refuses ("job credential revoked") a rerun whose credential is from the second of the requeue or before
    (it compares whole seconds), hence the 2 s."""
    wait_for(lambda: not processes_with(f"slurmstepd: [{job}."), 120, "the first run's steps to end")
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


@pytest.fixture(scope="module")
def local_slurm(tmp_path_factory):
    """A private single-node Slurm (own state dir and ports); yields the environment that talks to it."""
    if shutil.which("slurmctld") is None or os.geteuid() != 0:
        pytest.skip("needs root and Debian's slurm-wlm + munge (scripts/setup_system.sh)")
    state = tmp_path_factory.mktemp("slurm")
    env = {
        **os.environ,
        "SLURM_LOCAL_PORT": str(random.randrange(20000, 29998, 2)),
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("SPECIALIZE_SITE", None)
    script = ROOT / "cluster" / "local_slurm.sh"
    subprocess.run([str(script), "start", str(state)], env=env, check=True, capture_output=True, timeout=120)
    yield {**env, "SLURM_CONF": str(state / "slurm.conf")}
    subprocess.run([str(script), "stop", str(state)], env=env, check=False)


def submit(env: dict, *args: str) -> str:
    return subprocess.run(
        [str(LAUNCH), *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_srun_ddp_job_requeues_on_sigusr1_and_continues_from_its_checkpoint(local_slurm, tmp_path_factory, tmp_path):
    env = {**local_slurm, "SPECIALIZE_SLURM_DIR": str(tmp_path / "jobs")}
    config = tiny_config(session_tiny_data(tmp_path_factory), tmp_path, ["trainer.epochs=8", "trainer.strategy=ddp"])
    write_config(config, tmp_path / "config")
    job = submit(
        env,
        "--gpus-per-node",
        "0",
        "--ntasks-per-node",
        "2",
        "--cpus-per-task",
        "1",
        "--time",
        "15",
        "--",
        sys.executable,
        "-m",
        "specialize.cli",
        "train",
        "--config",
        str(tmp_path / "config/config.yaml"),
    )
    wait_for((config.run_dir / "checkpoints" / "last.ckpt").exists, 300, "the first epoch's checkpoint")
    signal_until_requeued(job, env, batch_shell=False)
    start_now(job, env)
    wait_for(lambda: ended(job, env), 400, "the job to end")

    log = job_log(tmp_path / "jobs")
    assert scontrol_job(job, env)["JobState"] == "COMPLETED", log[-3000:]
    [saved] = config.run_dir.glob("hpc_ckpt_*.ckpt")  # written on SIGUSR1, mid-epoch
    assert f"Restoring states from the checkpoint path at {saved}" in log  # the rerun continued from it
    state = torch.load(saved, map_location="cpu", weights_only=False)
    in_epoch = state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"]
    steps_per_epoch = (state["global_step"] - in_epoch) // state["epoch"]
    assert 0 < in_epoch < steps_per_epoch
    summary = json.loads((config.run_dir / "summary.json").read_text())
    assert summary["epochs"] == 8 and summary["global_step"] == 8 * steps_per_epoch  # no batch lost or repeated
    manifest = json.loads((config.run_dir / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["slurm_job_id"] == job
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log


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


def test_ray_lesion_job_with_node_local_data_requeues_on_sigusr1_and_equals_the_direct_sweep(local_slurm, tmp_path):
    data, checkpoint = untrained_checkpoint(tmp_path, train_per_class=6, test_per_class=2)
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


def test_job_array_trains_one_network_per_seed(local_slurm, tmp_path_factory, tmp_path):
    env = {**local_slurm, "SPECIALIZE_SLURM_DIR": str(tmp_path / "jobs")}
    config = tiny_config(session_tiny_data(tmp_path_factory), tmp_path, ["trainer.epochs=1"])
    write_config(config, tmp_path / "config")
    job = submit(
        env,
        "--array",
        "0-1",
        "--gpus-per-node",
        "0",
        "--cpus-per-task",
        "1",
        "--time",
        "15",
        "--",
        sys.executable,
        "-m",
        "specialize.cli",
        "train",
        "--config",
        str(tmp_path / "config/config.yaml"),
    )
    wait_for(lambda: ended(job, env), 400, "both array jobs to end")
    assert [record["JobState"] for record in scontrol_jobs(job, env)] == ["COMPLETED", "COMPLETED"], job_log(
        tmp_path / "jobs"
    )
    weights = []
    for seed in (0, 1):
        run = tmp_path / f"tiny_face_object-seed{seed}"
        assert json.loads((run / "config.json").read_text())["seed"] == seed
        assert json.loads((run / "summary.json").read_text())["epochs"] == 1
        weights.append(
            torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
        )
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
