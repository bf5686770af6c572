"""2-process CPU DDP (gloo, under torchrun) ends with the same weights as 1 process with the same global batch
(`helpers_train.DETERMINISTIC` says what makes the comparison fair, `assert_trained_alike` what "the same" means).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_train import DETERMINISTIC, ROOT, assert_trained_alike, session_tiny_data, tiny_config

from lightning_modules.config import write_config
from lightning_modules.train import train


@pytest.mark.slow
@pytest.mark.parametrize(
    "model",
    [
        [],  # VGG16, 2 epochs
        ["model.arch=alexnet", "data.resolution=64", "trainer.epochs=1"],  # another architecture, without batch norm
    ],
    ids=["vgg16", "alexnet"],
)
def test_two_process_ddp_matches_one_process(tmp_path_factory, tmp_path, model):
    """Batch-norm networks (ResNets) are left out: without SyncBatchNorm each rank normalises over its own half of a
    batch, so their DDP run is not one process's with the same global batch."""
    data_dir = session_tiny_data(tmp_path_factory)
    single = train(tiny_config(data_dir, tmp_path, [*DETERMINISTIC, *model, "output.run_name=single"]))
    config = tiny_config(
        data_dir,
        tmp_path,
        [*DETERMINISTIC, *model, "output.run_name=ddp", "trainer.devices=2", "trainer.strategy=ddp"],
    )
    write_config(config, tmp_path / "ddp_config")
    torchrun = Path(sys.executable).parent / "torchrun"
    subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "specialize.cli",
            "train",
            "--config",
            str(tmp_path / "ddp_config/config.yaml"),
        ],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=True,
        timeout=600,
        stdout=subprocess.DEVNULL,
    )
    assert_trained_alike(single, config.run_dir, steps=config.trainer.epochs * 384 // 32)
