"""Tiny Lightning runs on synthetic data: learning, load_model, W&B offline logs, kill-and-resume, bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_train import ROOT, kill_after_first_checkpoint, session_tiny_data, tiny_config, wandb_history

from common.errors import UserError
from lightning_modules.checkpoint import load_model
from lightning_modules.config import write_config
from lightning_modules.train import train
from specialize.cli import main

CHANCE_LOSS = math.log(8)  # 2 tasks x 4 classes


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return session_tiny_data(tmp_path_factory)


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_tiny_dual_task_run_learns_and_loads(data_dir, tmp_path):
    import pandas as pd

    from data_pipeline.sample import sample_images

    # training on the eval transform learns fastest, so 6 CPU epochs are enough to leave chance well behind
    run_dir = train(tiny_config(data_dir, tmp_path, ["trainer.epochs=6", "data.augment=false"]))
    metrics = summary(run_dir)["metrics"]
    epochs = pd.read_csv(run_dir / "metrics.csv").dropna(subset=["val/loss"])
    best = epochs.loc[epochs["val/loss"].idxmin()]  # the epoch best.ckpt holds (tiny BN models' val loss jumps about)
    assert summary(run_dir)["best_val_loss"] == pytest.approx(best["val/loss"]) and best["val/loss"] < 0.5 * CHANCE_LOSS
    # objects are told apart within 6 epochs (chance 0.25); face identity (fine facial geometry, 40 images per class
    # at 32 px) is not yet, but the network has learnt which outputs are faces: its face loss nears log(4), not log(8)
    # (the demo's 90 images per class at 48 px and 20 epochs learn identity)
    assert best["val/object/top1_own"] > 0.5 and best["val/face/loss"] < 0.8 * CHANCE_LOSS
    for task in ("face", "object"):
        assert metrics[f"val/{task}/top5_own"] == 1.0  # 4 classes per task
    assert {"config.yaml", "config.json", "manifest.json", "metrics.csv"} <= {p.name for p in run_dir.iterdir()}
    assert json.loads((run_dir / "manifest.json").read_text())["data_manifest_sha256"]

    loaded = load_model(run_dir / "checkpoints" / "last.ckpt")
    assert loaded.label_space.tasks == ("face", "object") and not loaded.model.training
    assert loaded.config.model.width == 1 / 16 and len(loaded.sha256) == 64
    # the logged validation accuracy is the accuracy on the val split (images set aside from training), not on test
    accuracy = {}
    for split in ("val", "test"):
        images, labels = sample_images(
            data_dir, "object", split, n=None, seed=0, resolution=32, label_space=loaded.label_space
        )
        with torch.no_grad():
            accuracy[split] = (loaded.model(images).argmax(1) == labels).float().mean().item()
    assert accuracy["val"] == pytest.approx(metrics["val/object/top1"], abs=1e-6)
    assert accuracy["test"] != pytest.approx(metrics["val/object/top1"], abs=1e-6)

    history = wandb_history(run_dir)
    logged_val = [row["val/loss"] for row in history if "val/loss" in row]
    assert len(logged_val) == 6 and logged_val[-1] == pytest.approx(metrics["val/loss"], rel=1e-6)
    assert {"train/face/top1_own", "val/object/top5", "lr"} <= set().union(*history)


def resume_overrides() -> list[str]:
    """Augmentation on (seeded random crops and grayscale), dropout on (exercises RNG state), a plateau that fires."""
    return ["trainer.epochs=4", "model.dropout=0.5", "optim.plateau_patience=0", "optim.plateau_factor=0.5"]


def test_two_runs_with_augmentation_and_the_same_seed_are_identical(data_dir, tmp_path):
    runs = [
        train(
            tiny_config(
                data_dir, tmp_path, ["trainer.epochs=2", f"output.run_name=run{i}", "wandb.mode=disabled", "seed=5"]
            )
        )
        for i in range(2)
    ]
    assert all(tiny_config(data_dir, tmp_path).data.augment for _ in runs)
    weights = [torch.load(run / "checkpoints/last.ckpt", weights_only=False)["state_dict"] for run in runs]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


# Torch threads of every run that the kill-and-resume test compares: float sums depend on the thread count, so the
# killed process (a subprocess, else at the machine's core count), the reference and the resumed run all use this.
THREADS = 1


@pytest.mark.parametrize("model", [[], ["model.arch=resnet18"]], ids=["vgg16", "resnet18"])
def test_kill_and_resume_reproduces_uninterrupted_run(data_dir, tmp_path, model):
    """VGG16, and a ResNet-18 (batch norm: its running statistics are restored too)."""
    torch.set_num_threads(THREADS)  # the reference and the resumed run, in this process
    overrides = [*resume_overrides(), *model]
    reference = train(tiny_config(data_dir, tmp_path, [*overrides, "output.run_name=reference", "wandb.mode=disabled"]))
    config = tiny_config(data_dir, tmp_path, [*overrides, "output.run_name=killed"])
    write_config(config, tmp_path / "killed_config")
    command = [sys.executable, "-m", "specialize.cli", "train", "--config", str(tmp_path / "killed_config/config.yaml")]
    # its own wandb-core service (not this process's): a killed client leaves its run id "in use" in a shared one
    env = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**env, "WANDB_MODE": "offline", "OMP_NUM_THREADS": str(THREADS)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_after_first_checkpoint(process, config.run_dir, timeout=120)
    last = config.run_dir / "checkpoints" / "last.ckpt"
    assert not (config.run_dir / "summary.json").exists()
    assert torch.load(last, weights_only=True)["epoch"] < 3  # killed with epochs left to run

    assert main(["train", "--resume", str(config.run_dir)]) == 0
    assert torch.get_num_threads() == THREADS
    resumed, uninterrupted = summary(config.run_dir), summary(reference)
    assert resumed["global_step"] == uninterrupted["global_step"]
    for key, value in uninterrupted["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert resumed["metrics"]["lr"] < config.optim.lr  # the plateau scheduler fired: its state matters
    weights = [
        torch.load(run / "checkpoints/last.ckpt", weights_only=False)["state_dict"]
        for run in (reference, config.run_dir)
    ]
    for key in weights[0]:
        torch.testing.assert_close(weights[1][key], weights[0][key], rtol=1e-5, atol=1e-6)
    run_ids = {path.name.rsplit("-", 1)[1] for path in (config.run_dir / "wandb").glob("offline-run-*")}
    assert len(run_ids) == 1 and len(list((config.run_dir / "wandb").glob("offline-run-*"))) == 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["tasks=[face,dog]"], "config key tasks: unknown task 'dog'; the data in"),
        (["data.classes.face=5"], "has 4 classes for task 'face' but data.classes.face=5"),
    ],
)
def test_bad_training_input_is_one_line(data_dir, tmp_path, capsys, overrides, message):
    config_path = str(ROOT / "configs/tiny_face_object.yaml")
    assert main(["train", "--config", config_path, f"data.dir={data_dir}", f"output.root={tmp_path}", *overrides]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error


def test_data_built_before_validation_splits_gets_one_clear_line(data_dir, tmp_path, capsys):
    """A data directory of the earlier layout (no val split; training then validated on test) is refused."""
    import shutil

    old = tmp_path / "old_data"
    shutil.copytree(data_dir, old)
    manifest = json.loads((old / "manifest.json").read_text())
    for entry in [*manifest["tasks"].values(), *manifest["pools"].values()]:
        (old / entry["files"].pop("val")).unlink()
    (old / "manifest.json").write_text(json.dumps(manifest))
    config_path = str(ROOT / "configs/tiny_face_object.yaml")
    assert main(["train", "--config", config_path, f"data.dir={old}", f"output.root={tmp_path}"]) == 2
    error = capsys.readouterr().err.strip()
    assert "was built before validation images were set aside" in error and "specialize data build" in error
    assert "\n" not in error and not (tmp_path / "tiny_face_object").exists()


def test_other_architecture_is_refused(data_dir, tmp_path):
    run_dir = train(tiny_config(data_dir, tmp_path, ["trainer.epochs=1", "wandb.mode=disabled"]))
    with pytest.raises(UserError, match=r"another model.width \(0.0625, now 0.125\)"):
        train(tiny_config(data_dir, tmp_path, ["trainer.epochs=1", "model.width=0.125", "wandb.mode=disabled"]))
    checkpoint = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=False)
    checkpoint["hyper_parameters"]["config"]["model"]["width"] = 0.125
    torch.save(checkpoint, tmp_path / "other.ckpt")
    with pytest.raises(UserError, match="another architecture"):
        load_model(tmp_path / "other.ckpt")
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_model(tmp_path / "junk.ckpt")


def test_cli_exits_2_with_one_line_on_a_bad_config():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "specialize.cli",
            "train",
            "--config",
            str(ROOT / "configs/tiny_face.yaml"),
            "optim.lrr=0.1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "specialize train: error: unknown config key optim.lrr; valid keys here: "
        "lr, momentum, plateau_factor, plateau_patience, weight_decay"
    )
