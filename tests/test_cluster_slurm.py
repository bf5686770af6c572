"""cluster/launch.sh writes the sbatch script; a real 2-task DDP job through a local Slurm survives SIGUSR1 (requeue)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time

import pytest

from helpers_train import ROOT, session_tiny_data, tiny_config
from lightning_modules.config import write_config

LAUNCH = ROOT / "cluster" / "launch.sh"


def test_launch_dry_run_writes_the_job_script(tmp_path):
    result = subprocess.run([str(LAUNCH), "--nodes", "2", "--gpus-per-node=4", "--time", "1:00:00", "--dry-run", "--",
                             "specialize", "train", "--config", "configs/face_object.yaml"],
                            env={**os.environ, "SPECIALIZE_SLURM_DIR": str(tmp_path)}, capture_output=True, text=True,
                            check=True)
    script = result.stdout
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --signal=USR1@90", "#SBATCH --requeue"):
        assert line in script.splitlines()
    assert script.splitlines()[-5] == ("srun specialize train --config configs/face_object.yaml "
                                       "trainer.devices=4 trainer.num_nodes=2")
    assert "--time 1:00:00" in script and "if ((status == 3)); then scontrol requeue" in script


def scontrol_job(job_id: str, env: dict) -> dict[str, str]:
    """`scontrol show job` as key -> value."""
    out = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


@pytest.fixture
def local_slurm(tmp_path_factory):
    """A private single-node Slurm (own state dir and ports); yields the environment that talks to it."""
    if shutil.which("slurmctld") is None or os.geteuid() != 0:
        pytest.skip("needs root and Debian's slurm-wlm + munge (scripts/setup_system.sh)")
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SLURM_LOCAL_PORT": str(random.randrange(20000, 29998, 2))}
    script = ROOT / "cluster" / "local_slurm.sh"
    subprocess.run([str(script), "start", str(state)], env=env, check=True, capture_output=True, timeout=120)
    yield {**env, "SLURM_CONF": str(state / "slurm.conf")}
    subprocess.run([str(script), "stop", str(state)], env=env, check=False)


@pytest.mark.slow
def test_srun_ddp_job_requeues_on_sigusr1_and_finishes(local_slurm, tmp_path_factory, tmp_path):
    env = {**local_slurm, "WANDB_MODE": "offline", "SPECIALIZE_SLURM_DIR": str(tmp_path / "jobs"), "OMP_NUM_THREADS": "1"}
    config = tiny_config(session_tiny_data(tmp_path_factory), tmp_path, ["trainer.epochs=8", "trainer.strategy=ddp"])
    write_config(config, tmp_path / "config")
    submitted = subprocess.run([str(LAUNCH), "--gpus-per-node", "0", "--ntasks-per-node", "2", "--time", "15", "--",
                                sys.executable, "-m", "specialize.cli", "train", "--config",
                                str(tmp_path / "config/config.yaml")],
                               cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    job = submitted.stdout.strip()
    last = config.run_dir / "checkpoints" / "last.ckpt"
    wait_for(last.exists, 300, "the first epoch's checkpoint")
    subprocess.run(["scancel", "--signal=USR1", job], env=env, check=True)  # what --signal=USR1@90 sends
    wait_for(lambda: int(scontrol_job(job, env).get("Restarts", 0)) >= 1, 120, "the requeue")
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, check=False)  # skip requeue delay
    wait_for(lambda: scontrol_job(job, env)["JobState"] in ("COMPLETED", "FAILED", "CANCELLED"), 400, "the job to end")

    log = "".join(path.read_text() for path in (tmp_path / "jobs").glob("*.out"))
    assert scontrol_job(job, env)["JobState"] == "COMPLETED", log[-3000:]
    assert list(config.run_dir.glob("hpc_ckpt_*.ckpt")), "SIGUSR1 did not save an hpc checkpoint"
    summary = json.loads((config.run_dir / "summary.json").read_text())
    assert summary["epochs"] == 8
    manifest = json.loads((config.run_dir / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["slurm_job_id"] == job
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log
