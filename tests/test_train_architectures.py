"""Every architecture of the registry trains (single and dual task) at tiny width and resolution, and its checkpoint
loads as the network it was trained as, with that network's lesion units."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers_train import ROOT, session_tiny_data

from lightning_modules.checkpoint import load_model
from lightning_modules.config import load_config
from lightning_modules.train import train
from lightning_modules.units import lesion_units


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return session_tiny_data(tmp_path_factory)


@pytest.mark.parametrize(
    "arch, config, overrides, units",
    [
        ("resnet18", "tiny_face_object", [], 17),
        ("resnet18", "tiny_object", [], 17),
        ("resnet50", "tiny_face_object", [], 49),
        ("alexnet", "tiny_face_object", ["model.batch_norm=false", "data.resolution=64"], 5),
        ("vgg11", "tiny_face", [], 8),
    ],
)
def test_each_architecture_trains_and_loads(data_dir, tmp_path, arch, config, overrides, units):
    settings = load_config(
        ROOT / "configs" / f"{config}.yaml",
        [
            f"data.dir={data_dir}",
            f"output.root={tmp_path}",
            "data.num_workers=1",
            "trainer.progress_bar=false",
            "trainer.epochs=1",
            "wandb.mode=disabled",
            f"model.arch={arch}",
            *overrides,
        ],
    )
    run_dir = train(settings)
    loaded = load_model(run_dir / "checkpoints" / "last.ckpt")
    assert loaded.config.model.arch == arch and len(lesion_units(loaded.model)) == units
    metrics = json.loads((run_dir / "summary.json").read_text())["metrics"]
    assert math.isfinite(metrics["val/loss"]) and {f"val/{task}/top1" for task in settings.tasks} <= set(metrics)
