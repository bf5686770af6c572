"""A quiet console: a command whose output goes to a pipe shows its results and the project's own lines, without
Lightning's hints and device lines, its internal deprecation warnings, W&B's banners and summary blocks, or progress
bar refreshes; `--verbose` brings them back. A process that forks after using FFCV loaders prints nothing from
numba's threading layer."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers_data import compiled_environment
from helpers_train import ROOT, session_tiny_data

from common.console import VERBOSE_VARIABLE

NOISE = (
    "GPU available",  # Lightning's device lines
    "Tip:",  # Lightning's cloud-logging tip
    "srun` command is available",  # Lightning's Slurm hint (srun is installed here)
    "is deprecated",  # deprecation warnings from Lightning's internals
    "wandb: Tracking run",  # W&B's banner
    "wandb: Run summary",  # W&B's summary block
    "it/s]",  # a progress bar refresh
)


FORK_LINE = "Unable to join threads to shut down before fork()"  # numba's TBB layer, written from C
# Uses loaders as a fit and the analyses do, then forks (as the demo starts Ray after training): Lightning's check
# that a loader is iterable (an iterator dropped at once), a whole epoch, a stream closed after one batch. It waits a
# second before the fork: a thread Python counts as ended still runs its native exit, where TBB lets it go, for a
# moment (the demo starts Ray seconds after training); a loader thread left running made the line at any wait.
LOADERS_THEN_FORK = """
import os, sys, threading, time
from data_pipeline.loaders import make_loader
from data_pipeline.sample import stream_batches

beton = sys.argv[1]
loader = make_loader(beton, train=True, batch_size=2, resolution=32, num_workers=2)
iter(loader)
for batch in loader:
    pass
next(stream_batches(beton, 32, batch_size=2))
print("loader threads:", sum(type(thread).__name__ == "EpochIterator" for thread in threading.enumerate()), flush=True)
time.sleep(1)
child = os.fork()
if child == 0:
    os._exit(0)
os.waitpid(child, 0)
"""


@pytest.mark.jit  # numba's threads run only in compiled code
def test_forking_after_loaders_prints_nothing_from_numba(tmp_path_factory):
    beton = session_tiny_data(tmp_path_factory) / "face" / "train.beton"
    run = subprocess.run(
        [sys.executable, "-c", LOADERS_THEN_FORK, str(beton)],
        cwd=ROOT,
        env=compiled_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "loader threads: 0" in run.stdout
    assert FORK_LINE not in run.stdout + run.stderr


RAY_AUTH_SCRIPT = """
from common.console import setup_console
from ray._private.authentication import authentication_token_setup as setup

setup_console()
setup._warn_token_auth_enabled()
setup._warn_token_auth_disabled()
"""


def test_ray_token_notice_is_quiet_and_its_security_warning_kept():
    env = {key: value for key, value in os.environ.items() if key != VERBOSE_VARIABLE}
    quiet = subprocess.run([sys.executable, "-c", RAY_AUTH_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "Token authentication is enabled" not in quiet.stderr
    assert "Token authentication is disabled" in quiet.stderr
    env[VERBOSE_VARIABLE] = "1"
    loud = subprocess.run([sys.executable, "-c", RAY_AUTH_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True)
    assert "Token authentication is enabled" in loud.stderr


def train_command(data, out, *options: str) -> list[str]:
    """`specialize [options] train` of one tiny epoch, W&B offline."""
    overrides = [f"data.dir={data}", f"output.root={out}", "trainer.epochs=1", "data.batch_size=8"]
    config = str(ROOT / "configs" / "tiny_face_object.yaml")
    return [sys.executable, "-m", "specialize.cli", *options, "train", "--config", config, *overrides]


@pytest.mark.slow
def test_piped_output_is_quiet_and_verbose_brings_everything_back(tmp_path_factory, tmp_path):
    data = session_tiny_data(tmp_path_factory)
    # as from a fresh shell: not the suite's own W&B service, nor what an in-process command of an earlier test set
    # (WANDB_SILENT, which would hide W&B's lines from the --verbose run, and SPECIALIZE_VERBOSE)
    leftovers = ("WANDB_SERVICE", "WANDB_SILENT", VERBOSE_VARIABLE)
    env = {key: value for key, value in os.environ.items() if key not in leftovers}
    env["WANDB_MODE"] = "offline"
    quiet = subprocess.run(
        train_command(data, tmp_path / "quiet"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    output = quiet.stdout + quiet.stderr
    assert [noise for noise in NOISE if noise in output] == []
    assert f"run directory: {tmp_path / 'quiet' / 'tiny_face_object'}" in quiet.stdout  # the result, on stdout
    assert "INFO specialize: epoch 1 of 1: val/loss" in quiet.stderr  # a line per epoch, in the one format
    assert "INFO common.stage: training run finished" in quiet.stderr

    loud = subprocess.run(
        train_command(data, tmp_path / "loud", "--verbose"), cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert loud.returncode == 0, loud.stderr[-2000:]
    output = loud.stdout + loud.stderr
    for line in ("GPU available", "Tip:", "wandb:"):
        assert line in output, line
