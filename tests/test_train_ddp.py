"""2-process CPU DDP (gloo, under torchrun) ends with the same weights as 1 process with the same global batch
(`helpers_train.DETERMINISTIC` says what makes the comparison fair, `assert_trained_alike` what "the same" means);
one rank killed with SIGKILL mid-training fails the launch promptly, and a rerun resumes from the last checkpoint to
the uninterrupted 2-process run's weights.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from helpers_train import DETERMINISTIC, ROOT, assert_trained_alike, session_tiny_data, tiny_config

from lightning_modules.config import TrainConfig, write_config
from lightning_modules.train import train

pytestmark = pytest.mark.slow
STEPS_PER_EPOCH = 384 // 32  # tiny data: 384 training images, global batch 32
MODELS = {
    "vgg16": [],  # VGG16, 2 epochs
    "alexnet": ["model.arch=alexnet", "data.resolution=64", "trainer.epochs=1"],  # without batch norm
}


def ddp_config(data_dir: Path, out: Path, model: list[str], name: str) -> TrainConfig:
    """The DETERMINISTIC run `name` on 2 processes, its config written to `out`/`name`_config."""
    overrides = [*DETERMINISTIC, *model, f"output.run_name={name}", "trainer.devices=2", "trainer.strategy=ddp"]
    config = tiny_config(data_dir, out, overrides)
    write_config(config, out / f"{name}_config")
    return config


def torchrun(config: TrainConfig, out: Path) -> subprocess.Popen:
    """`specialize train` of `config` on 2 processes under torchrun, in its own process group."""
    command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=2", "-m"]
    config_file = out / f"{config.output.run_name}_config" / "config.yaml"
    return subprocess.Popen(
        [*command, "specialize.cli", "train", "--config", str(config_file)],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def run_ddp(config: TrainConfig, out: Path) -> str:
    """Train `config` (written by `ddp_config` under `out`) to its end on 2 processes; the launch's log (stderr)."""
    process = torchrun(config, out)
    try:
        _, stderr = process.communicate(timeout=600)
    finally:
        end_group(process)
    assert process.returncode == 0, stderr[-3000:]
    return stderr


def end_group(process: subprocess.Popen) -> None:
    """SIGKILL what is left of a launch's process group (nothing, when it ended as it should)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@pytest.fixture(scope="module")
def vgg16_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """The tiny data and VGG16's uninterrupted runs on it, 1 process and 2 (DDP), trained once for the module."""
    data_dir = session_tiny_data(tmp_path_factory)
    out = tmp_path_factory.mktemp("ddp_vgg16")
    single = train(tiny_config(data_dir, out, [*DETERMINISTIC, "output.run_name=single"]))
    config = ddp_config(data_dir, out, MODELS["vgg16"], "ddp")
    run_ddp(config, out)
    return data_dir, single, config.run_dir


@pytest.mark.parametrize("model", list(MODELS))
def test_two_process_ddp_matches_one_process(tmp_path_factory, tmp_path, request, model):
    """Batch-norm networks (ResNets) are left out: without SyncBatchNorm each rank normalises over its own half of a
    batch, so their DDP run is not one process's with the same global batch."""
    if model == "vgg16":
        _, single, ddp = request.getfixturevalue("vgg16_runs")
        epochs = 2
    else:
        data_dir = session_tiny_data(tmp_path_factory)
        single = train(tiny_config(data_dir, tmp_path, [*DETERMINISTIC, *MODELS[model], "output.run_name=single"]))
        config = ddp_config(data_dir, tmp_path, MODELS[model], "ddp")
        run_ddp(config, tmp_path)
        ddp, epochs = config.run_dir, config.trainer.epochs
    assert_trained_alike(single, ddp, steps=epochs * STEPS_PER_EPOCH)


def rank_process(launcher: psutil.Process, rank: int) -> psutil.Process:
    """The worker process of `rank` among a torchrun launcher's children (by the RANK torchrun set for it)."""
    workers = [child for child in launcher.children(recursive=True) if child.environ().get("RANK") == str(rank)]
    assert len(workers) == 1, f"rank {rank}: {workers}"
    return workers[0]


def test_ddp_with_one_rank_killed_fails_promptly_and_resumes_to_the_uninterrupted_run(vgg16_runs, tmp_path):
    data_dir, _, uninterrupted = vgg16_runs
    config = ddp_config(data_dir, tmp_path, MODELS["vgg16"], "killed")
    last = config.run_dir / "checkpoints" / "last.ckpt"
    process = torchrun(config, tmp_path)
    try:
        deadline = time.monotonic() + 300
        while not last.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None and last.exists(), "the run ended or stalled before its first checkpoint"
        launcher = psutil.Process(process.pid)
        survivor = rank_process(launcher, rank=0)
        rank_process(launcher, rank=1).kill()  # SIGKILL, after epoch 1's checkpoint, before epoch 2's
        started = time.monotonic()
        _, stderr = process.communicate(timeout=120)  # rank 0, blocked on its partner, is ended by torchrun
    finally:
        end_group(process)
    assert process.returncode != 0 and "SIGKILL" in stderr, stderr[-3000:]
    assert time.monotonic() - started < 120 and not survivor.is_running()
    saved = torch.load(last, weights_only=True)
    assert saved["epoch"] == 0 and saved["global_step"] == STEPS_PER_EPOCH  # killed after epoch 1's checkpoint only
    assert not (config.run_dir / "summary.json").exists()

    log = run_ddp(config, tmp_path)
    assert f"Restoring states from the checkpoint path at {last}" in log  # Lightning's line: resumed, from last.ckpt
    weights = [torch.load(run / "checkpoints/last.ckpt", weights_only=True) for run in (uninterrupted, config.run_dir)]
    assert weights[1]["global_step"] == weights[0]["global_step"] == 2 * STEPS_PER_EPOCH
    assert weights[0]["state_dict"].keys() == weights[1]["state_dict"].keys()
    assert all(torch.equal(weights[1]["state_dict"][key], value) for key, value in weights[0]["state_dict"].items())
