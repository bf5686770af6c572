"""`model.heads: separate` through training, the lesion sweep and the segregation analysis: at every stage an image
is scored within its own task's head (cross-entropy and top-1 over that task's slice of the outputs), checked
against scores computed by hand from the trained network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers_train import session_tiny_data, tiny_config

from analysis.segregation.run import run_segregation
from analysis.segregation.settings import SegregationSettings
from data_pipeline.normalise import normalise_uint8
from data_pipeline.sample import sample_images
from lightning_modules.checkpoint import load_model
from lightning_modules.train import train
from sweeps.distributed import run_sweep, training_images
from sweeps.lesions import lesioned
from sweeps.settings import SweepSettings

pytestmark = pytest.mark.slow
LAYERS = ("conv5_3",)  # one layer keeps the segregation analysis at three units


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny face+object data and a tiny network trained two epochs with one softmax per task."""
    data = session_tiny_data(tmp_path_factory)
    out = tmp_path_factory.mktemp("separate_heads")
    run_dir = train(
        tiny_config(
            data, out, ["model.heads=separate", "trainer.epochs=2", "data.augment=false", "wandb.mode=disabled"]
        )
    )
    return data, run_dir


def scores_by_hand(logits: torch.Tensor, labels: torch.Tensor, label_space) -> tuple[np.ndarray, np.ndarray]:
    """Per image: cross-entropy and top-1 answer within the slice of the outputs that holds its task's classes."""
    loss, answer = torch.empty(len(labels)), torch.empty(len(labels), dtype=torch.long)
    for task in label_space.tasks:
        head = label_space.output_slice(task)
        rows = (labels >= head.start) & (labels < head.stop)
        loss[rows] = F.cross_entropy(logits[rows, head], labels[rows] - head.start, reduction="none")
        answer[rows] = logits[rows, head].argmax(1) + head.start
    return loss.numpy(), answer.numpy()


def test_training_loss_and_accuracy_are_per_head(two_heads):
    data, run_dir = two_heads
    loaded = load_model(run_dir / "checkpoints" / "last.ckpt")
    assert loaded.config.model.heads == "separate" and not loaded.output_heads.shared
    metrics = json.loads((run_dir / "summary.json").read_text())["metrics"]
    losses, shared_losses = [], []
    with torch.inference_mode():
        for task in loaded.label_space.tasks:  # training validates on the val split
            images, labels = sample_images(data, task, "val", None, 0, 32, label_space=loaded.label_space)
            logits = loaded.model(images)
            loss, answer = scores_by_hand(logits, labels, loaded.label_space)
            losses.append(loss)
            shared_losses.append(F.cross_entropy(logits, labels, reduction="none").numpy())
            assert metrics[f"val/{task}/loss"] == pytest.approx(loss.mean(), rel=1e-4)
            assert metrics[f"val/{task}/top1_own"] == pytest.approx((answer == labels.numpy()).mean(), abs=1e-6)
    assert metrics["val/loss"] == pytest.approx(np.concatenate(losses).mean(), rel=1e-4)
    assert abs(np.concatenate(shared_losses).mean() - metrics["val/loss"]) > 1e-2  # one softmax would differ


@pytest.fixture(scope="module")
def sweep(two_heads, ray_cluster) -> Path:
    data, run_dir = two_heads
    out = run_dir.parent / "sweep"
    run_sweep(
        run_dir / "checkpoints" / "last.ckpt",
        data,
        out,
        settings=SweepSettings(images_per_task=12, layers=LAYERS, filters_per_task=16),
        progress=False,
    )
    return out


def test_sweep_scores_each_image_within_its_head(two_heads, sweep):
    data, run_dir = two_heads
    loaded = load_model(run_dir / "checkpoints" / "last.ckpt")
    assert json.loads((sweep / "manifest.json").read_text())["heads"] == "separate"
    table = pd.read_parquet(sweep / "filter_losses.parquet").set_index(["layer", "filter", "task"])
    images_by_task = training_images(loaded, data, 12, 0)  # the sweep's seeded sample of training images
    with torch.inference_mode():
        for task, (stored, labels) in images_by_task.items():
            images = normalise_uint8(stored)  # the sweep ships uint8 crops and normalises them on the worker
            loss, answer = scores_by_hand(loaded.model(images), labels, loaded.label_space)
            rows = table.xs(task, level="task")
            assert rows["intact_loss"].sub(loss.mean()).abs().max() < 1e-5
            assert (rows["intact_accuracy"] == (answer == labels.numpy()).mean()).all()
            shared = F.cross_entropy(loaded.model(images), labels).item()
            assert abs(shared - loss.mean()) > 1e-2  # one softmax would differ
            for layer in LAYERS:
                for f in (0, 3):
                    with lesioned(loaded.model, {layer: [f]}):
                        loss, answer = scores_by_hand(loaded.model(images), labels, loaded.label_space)
                    assert table.loc[(layer, f, task), "loss"] == pytest.approx(loss.mean(), abs=1e-5)
                    assert table.loc[(layer, f, task), "accuracy"] == (answer == labels.numpy()).mean()


def test_segregation_answers_are_the_images_own_head(two_heads, sweep, tmp_path):
    data, run_dir = two_heads
    loaded = load_model(run_dir / "checkpoints" / "last.ckpt")
    summary = run_segregation(sweep, tmp_path, data, SegregationSettings(n_bootstraps=20))
    predictions = pd.read_parquet(tmp_path / "predictions.parquet")
    ranking = pd.read_parquet(sweep / "ranking.parquet")
    top = ranking[(ranking.layer == "conv5_3") & (ranking.task == "face")].sort_values("rank")["filter"].tolist()
    lesion = top[: int(np.floor(0.2 * len(top) + 0.5))]
    any_answer_outside_head = False
    with torch.inference_mode():
        for task in loaded.label_space.tasks:
            images, labels = sample_images(data, task, "test", None, 0, 32, label_space=loaded.label_space)
            for layer, lesioned_task, filters in (("intact", "none", []), ("conv5_3", "face", lesion)):
                with lesioned(loaded.model, {"conv5_3": filters}):
                    logits = loaded.model(images)
                _, answer = scores_by_hand(logits, labels, loaded.label_space)
                rows = predictions[
                    (predictions.layer == layer)
                    & (predictions.lesioned_task == lesioned_task)
                    & (predictions.eval_task == task)
                    & (predictions.fraction == (0.0 if layer == "intact" else 0.2))
                ]
                assert rows.sort_values("image")["prediction"].tolist() == answer.tolist()
                any_answer_outside_head |= bool((logits.argmax(1).numpy() != answer).any())
            intact = predictions[(predictions.layer == "intact") & (predictions.eval_task == task)]
            assert summary["intact_accuracy"]["all_outputs"][task]["accuracy"] == pytest.approx(
                intact["correct"].mean()
            )
    assert any_answer_outside_head  # the top output over all outputs lies in the other head for some images
