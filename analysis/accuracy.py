"""Test accuracy of a trained network with its bootstrap interval (the paper's Fig. 1C), on the checkpoint the analyses
lesion.

Every test image of every task the network was trained on is classified once (the evaluation engine,
`sweeps.evaluation`, with no lesion; the .beton in file order with the eval transform). Per task: top-1 over all
outputs (METHOD's measure; a dual-task network must also tell the tasks apart) and top-1 within the task's own
outputs, each with a 95% hierarchical-bootstrap interval (classes, then images within classes: `analysis.bootstrap`,
the resamples the segregation analysis draws for its intact accuracies with the same seed).

Output directory: accuracy.parquet (task, scope, accuracy, accuracy_low, accuracy_high, images, classes),
config.json, manifest.json.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.bootstrap import DEFAULT_RESAMPLES, bootstrap_accuracies, percentile_interval, task_rng
from analysis.segregation.settings import DEFAULT_BATCH_SIZE, SCOPES
from common.io import write_parquet
from common.stage import StageDir
from common.typed_config import check_at_least

ACCURACY_FILE = "accuracy.parquet"


@dataclass(frozen=True)
class AccuracySettings:
    """The bootstrap of the test accuracy, and the images per forward pass."""

    n_bootstraps: int = DEFAULT_RESAMPLES
    seed: int = 0
    level: float = 0.95
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        check_at_least("n_bootstraps", self.n_bootstraps, 1)
        check_at_least("batch_size", self.batch_size, 1)


def task_answers(loaded, data_dir: str | os.PathLike, batch_size: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per task: (correctness (scopes, images) in SCOPES order, each image's label) on its whole test split."""
    from data_pipeline.data_dir import DataDir
    from data_pipeline.sample import stream_batches
    from sweeps.evaluation import INTACT, Readout, evaluate_lesions

    data, space = DataDir(data_dir), loaded.label_space
    data.check_serves(space)
    grouping = {
        task: np.arange(space.offset(task), space.offset(task) + space.num_classes(task)) for task in space.tasks
    }
    answers = {}
    for task in space.tasks:
        batches = stream_batches(
            data.beton(task, "test"), loaded.config.data.resolution, batch_size, space.offset(task)
        )
        found = evaluate_lesions(loaded.model, batches, [Readout(INTACT)], [grouping], loaded.output_heads)
        correct = {"all_outputs": found.prediction[0] == found.labels, "task_outputs": found.within[0] == found.labels}
        answers[task] = (np.stack([correct[scope] for scope in SCOPES]), found.labels)
    return answers


def accuracy_table(answers: dict[str, tuple[np.ndarray, np.ndarray]], settings: AccuracySettings) -> pd.DataFrame:
    """Per task and scope: top-1 with its hierarchical-bootstrap interval."""
    rows = []
    for task, (correct, labels) in answers.items():
        samples = bootstrap_accuracies(correct, labels, settings.n_bootstraps, task_rng(settings.seed, task))
        low, high = percentile_interval(samples, settings.level)
        for index, scope in enumerate(SCOPES):
            rows.append(
                {
                    "task": task,
                    "scope": scope,
                    "accuracy": float(correct[index].mean()),
                    "accuracy_low": float(low[index]),
                    "accuracy_high": float(high[index]),
                    "images": int(labels.size),
                    "classes": int(np.unique(labels).size),
                }
            )
    return pd.DataFrame(rows)


def run_test_accuracy(
    checkpoint: str | os.PathLike,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: AccuracySettings = AccuracySettings(),
) -> pd.DataFrame:
    """The test accuracy of a checkpoint on its data into `out_dir` (see the module docstring); a finished one is
    returned as it is."""
    from lightning_modules.checkpoint import load_model

    loaded = load_model(checkpoint)
    data = str(Path(data_dir).resolve())
    identity = {"checkpoint_sha256": loaded.sha256, "data": data, **asdict(settings)}
    identity.pop("batch_size")  # changes no answer
    stage = StageDir(Path(out_dir), "test accuracy", identity).check()
    if stage.finished:
        return pd.read_parquet(stage.path / ACCURACY_FILE)
    out = stage.start({"checkpoint": str(Path(checkpoint).resolve()), "data": data, **asdict(settings)})
    table = accuracy_table(task_answers(loaded, data, settings.batch_size), settings)
    write_parquet(out / ACCURACY_FILE, table)
    stage.finish(
        "test_accuracy",
        checkpoint=str(Path(checkpoint).resolve()),
        checkpoint_sha256=loaded.sha256,
        data=data,
        seeds={"bootstrap": settings.seed},
    )
    return table
