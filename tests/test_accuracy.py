"""Test accuracy of a checkpoint (Fig. 1C): every test image classified once, top-1 per task and scope with its
hierarchical-bootstrap interval, resumable as a stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_train import untrained_checkpoint

from analysis.accuracy import AccuracySettings, run_test_accuracy


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return untrained_checkpoint(tmp_path_factory.mktemp("accuracy"), train_per_class=4, test_per_class=4)


def test_test_accuracy_is_each_tasks_top1_with_its_interval(checkpoint, tmp_path):
    from data_pipeline.data_dir import DataDir
    from data_pipeline.sample import stream_batches
    from lightning_modules.checkpoint import load_model

    data, model_path = checkpoint
    table = run_test_accuracy(model_path, data, tmp_path / "accuracy", AccuracySettings(n_bootstraps=200))
    loaded = load_model(model_path)
    space, resolution = loaded.label_space, loaded.config.data.resolution
    for task in space.tasks:
        outputs = np.arange(space.offset(task), space.offset(task) + space.num_classes(task))
        right, right_within, count = 0, 0, 0
        with torch.inference_mode():
            for images, labels in stream_batches(DataDir(data).beton(task, "test"), resolution, 7, space.offset(task)):
                logits = loaded.model.eval()(images)
                right += int((logits.argmax(1) == labels).sum())
                right_within += int((torch.from_numpy(outputs)[logits[:, outputs].argmax(1)] == labels).sum())
                count += len(labels)
        rows = table[table["task"] == task].set_index("scope")
        assert rows.loc["all_outputs", "images"] == count == 4 * space.num_classes(task)
        assert rows.loc["all_outputs", "accuracy"] == pytest.approx(right / count)
        assert rows.loc["task_outputs", "accuracy"] == pytest.approx(right_within / count)
        assert (rows["accuracy_low"] <= rows["accuracy"]).all() and (rows["accuracy"] <= rows["accuracy_high"]).all()
    assert table["accuracy"].gt(0).any()  # not a table of zeros: the within-task scope has few outputs
    again = run_test_accuracy(model_path, data, tmp_path / "accuracy", AccuracySettings(n_bootstraps=200))
    assert again.equals(table)  # finished: read back, not redone
