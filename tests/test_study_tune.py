"""`specialize tune`: a study without analyses; two real training trials through Ray Tune, resumable, with a table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from helpers_train import ROOT, build_tiny_data

from data_pipeline.data_dir import DataDir
from data_pipeline.sample import stream_batches
from lightning_modules.checkpoint import load_model
from specialize.cli import main

pytestmark = pytest.mark.ray  # starts Ray through the command line


def test_bad_seeds_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(
        ["tune", "--config", str(ROOT / "configs" / "tiny_face_object.yaml"), "--seeds", "0,x", "--out", str(tmp_path)]
    )
    assert code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def val_top1(checkpoint: Path, data: Path) -> dict[str, float]:
    """Per task, the top-1 accuracy over all outputs (one softmax over every class) of `checkpoint` on the task's
    val split, scored in plain torch."""
    import torch

    loaded = load_model(checkpoint)
    assert loaded.config.model.heads == "shared"
    accuracies = {}
    for task in loaded.label_space.tasks:
        offset = loaded.label_space.offset(task)
        correct = total = 0
        with torch.no_grad():
            for images, labels in stream_batches(
                DataDir(data).beton(task, "val"), loaded.config.data.resolution, 64, offset
            ):
                correct += int((loaded.model(images).argmax(dim=1) == labels).sum())
                total += len(labels)
        accuracies[task] = correct / total
    return accuracies


@pytest.mark.slow
def test_tune_trains_every_seed_and_reruns_without_retraining(tmp_path: Path) -> None:
    data = build_tiny_data(tmp_path, train_per_class=16, test_per_class=8)
    args = [
        "tune",
        "--config",
        str(ROOT / "configs" / "tiny_face_object.yaml"),
        "--seeds",
        "0,1",
        "--out",
        str(tmp_path / "runs"),
        f"data.dir={data}",
        "trainer.epochs=1",
        "data.num_workers=1",
        "wandb.mode=disabled",
    ]
    assert main(args) == 0
    table = pd.read_parquet(tmp_path / "runs" / "trials.parquet")
    assert sorted(table["seed"]) == [0, 1]
    assert [list(tasks) for tasks in table["tasks"]] == [["face", "object"]] * 2
    checkpoints = {
        seed: tmp_path / "runs" / "trials" / f"tiny_face_object-seed{seed}" / "train" / "checkpoints" / "last.ckpt"
        for seed in (0, 1)
    }
    for trial in table.to_dict("records"):  # each task's top-1 as reported, against the trial's network scored here
        accuracies = val_top1(checkpoints[trial["seed"]], data)
        assert sorted(accuracies) == ["face", "object"]
        assert {task: trial[f"val/{task}/top1"] for task in accuracies} == pytest.approx(accuracies, abs=1e-6)
    mtimes = {seed: path.stat().st_mtime_ns for seed, path in checkpoints.items()}
    # The two seeds give different networks.
    import torch

    weights = [torch.load(path, map_location="cpu", weights_only=False)["state_dict"] for path in checkpoints.values()]
    key = next(k for k in weights[0] if k.endswith("weight"))
    assert not torch.equal(weights[0][key], weights[1][key])
    # A rerun finds both runs finished and trains nothing again.
    assert main(args) == 0
    assert {seed: path.stat().st_mtime_ns for seed, path in checkpoints.items()} == mtimes


def test_more_than_one_gpu_per_trial_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(
        [
            "tune",
            "--config",
            str(ROOT / "configs" / "tiny_face_object.yaml"),
            "--gpus-per-trial",
            "2",
            "--out",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert "at most one GPU" in error and "\n" not in error and not (tmp_path / "runs").exists()
