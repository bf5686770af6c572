"""A training killed while it shares a W&B service (handed down through WANDB_SERVICE, as to a study's trials) leaves
its run id "in use" in that service, which outlives the kill; the rerun attaches to the same run id from a service
of its own. Offline W&B (online is not reachable here; the id and the service are the same there)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import wandb
from helpers_train import ROOT, kill_after_first_checkpoint, session_tiny_data, tiny_config, wandb_records

from lightning_modules.config import write_config

SERVICE = "WANDB_SERVICE"


@pytest.fixture
def shared_service(tmp_path):
    """A W&B service started by this process, handed to every child through WANDB_SERVICE; its own run finished."""
    wandb.init(mode="offline", dir=str(tmp_path), project="specialize-tests").finish()
    assert SERVICE in os.environ
    yield os.environ[SERVICE]


@pytest.mark.slow
def test_rerun_after_a_kill_attaches_to_the_same_run_id(tmp_path_factory, tmp_path, shared_service):
    data = session_tiny_data(tmp_path_factory)
    config = tiny_config(data, tmp_path, ["trainer.epochs=6", "output.run_name=killed"])
    write_config(config, tmp_path / "config")
    command = [sys.executable, "-m", "specialize.cli", "train", "--config", str(tmp_path / "config" / "config.yaml")]
    env = {**os.environ, "WANDB_MODE": "offline"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_after_first_checkpoint(process, config.run_dir)
    assert os.environ[SERVICE] == shared_service  # the service outlives the kill, holding the run's id

    rerun = subprocess.run(
        [sys.executable, "-m", "specialize.cli", "train", "--resume", str(config.run_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "is in use" not in rerun.stderr
    # The shared service may hold what it received of the killed run in its write buffer until it ends (measured:
    # the run's file held its 7-byte header alone, then 7 kB); end it before reading the records.
    wandb.teardown()
    run_id = (config.run_dir / "wandb_id.txt").read_text().strip()
    # the killed run and the rerun (its refused first try left a folder of its own), all under the one id
    assert all(f"-{run_id}" in path.name for path in (config.run_dir / "wandb").glob("offline-run-*"))
    [killed, rerun_records] = wandb_records(config.run_dir)[0], wandb_records(config.run_dir)[-1]
    for records in (killed, rerun_records):
        assert [record["run"]["run_id"] for record in records if record.get("type") == "run"] == [run_id]
    assert any(record.get("type") == "history" for record in rerun_records)  # the rerun logged its epochs
    assert (config.run_dir / "manifest.json").is_file()
