"""2-process CPU DDP (gloo, under torchrun) ends with the same weights as 1 process with the same global batch.

A fair comparison needs both runs to see the same global batches: the training input is deterministic
(`data.augment=false`: eval transform, file order, so FFCV's distributed split hands rank r the samples
r, r+2, ... and the two ranks' half batches together form the 1-process batch), there is no dropout, and no
batch norm (its statistics would be per rank). DDP averages the ranks' mean gradients, which equals the
1-process mean gradient up to float summation order.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_train import ROOT, session_tiny_data, tiny_config

from lightning_modules.config import write_config
from lightning_modules.train import train

DETERMINISTIC = [
    "trainer.epochs=2",
    "data.augment=false",
    "model.dropout=0.0",
    "model.batch_norm=false",
    "wandb.mode=disabled",
    "data.batch_size=32",
]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path_factory, tmp_path):
    data_dir = session_tiny_data(tmp_path_factory)
    single = train(tiny_config(data_dir, tmp_path, [*DETERMINISTIC, "output.run_name=single"]))
    config = tiny_config(
        data_dir, tmp_path, [*DETERMINISTIC, "output.run_name=ddp", "trainer.devices=2", "trainer.strategy=ddp"]
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
    states = [torch.load(run / "checkpoints/last.ckpt", weights_only=True) for run in (single, config.run_dir)]
    assert states[0]["global_step"] == states[1]["global_step"] == 2 * 384 // 32
    for key, reference in states[0]["state_dict"].items():
        torch.testing.assert_close(states[1]["state_dict"][key], reference, rtol=1e-4, atol=1e-6)
    initial = initial_weights(single)
    change = max((states[0]["state_dict"][f"model.{k}"] - v).abs().max().item() for k, v in initial.items())
    assert change > 1e-3  # the runs moved far beyond the tolerance: agreeing is not trivial


def initial_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The weights a run started from (same seed, same construction as `train`)."""
    import pytorch_lightning as pl

    from common.io import read_json
    from data_pipeline.label_space import LabelSpace
    from lightning_modules.checkpoint import build_model
    from lightning_modules.config import read_run_config

    config = read_run_config(run_dir)
    pl.seed_everything(config.seed, verbose=False)
    return build_model(LabelSpace.from_dict(read_json(run_dir / "label_space.json")), config.model).state_dict()
