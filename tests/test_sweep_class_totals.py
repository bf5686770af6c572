"""The sweep's per-class table: its sums by hand, per-task losses from it, and rankings of other groupings of the
classes from it equal to a sweep of the images relabelled into those groupings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers_sweeps import tiny_images, tiny_vgg

from analysis.segregation.task_groups import regroup
from lightning_modules.vgg import filters_per_layer
from sweeps.class_totals import ClassTotals
from sweeps.engine import class_lesion_sweep, lesion_sweep
from sweeps.lesions import lesioned
from sweeps.ranking import oneshot_ranking
from sweeps.reference import reference_lesion_sweep

LAYERS = ["conv1_2", "conv3_1", "conv5_3"]
COUNTS = {"a": 25, "b": 19}


def test_per_class_sums_are_the_images_losses_summed_by_class_and_give_the_task_losses():
    model, data = tiny_vgg(seed=11), tiny_images(seed=12, counts=COUNTS)
    totals = class_lesion_sweep(model, data, layers=LAYERS, batch_size=7, lesions_per_pass=3)
    sizes = filters_per_layer(model)
    assert totals.loss.shape == (sum(sizes[layer] for layer in LAYERS), 6) and totals.correct.dtype == np.int64
    images = torch.cat([pair[0] for pair in data.values()])
    labels = torch.cat([pair[1] for pair in data.values()])
    assert totals.images.tolist() == np.bincount(labels.numpy(), minlength=6).tolist()

    def by_class(logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Cross-entropy and correct answers per image, summed per class with numpy: no code shared with the sweep."""
        loss = F.cross_entropy(logits, labels, reduction="none").double().numpy()
        correct = (logits.argmax(1) == labels).numpy()
        return np.bincount(labels.numpy(), loss, minlength=6), np.bincount(labels.numpy(), correct, minlength=6)

    with torch.inference_mode():
        intact_loss, intact_correct = by_class(model(images))
        np.testing.assert_allclose(totals.intact_loss, intact_loss, rtol=1e-5)
        assert totals.intact_correct.tolist() == intact_correct.tolist()
        for row in range(0, len(totals.filters), 5):  # every fifth lesion, all three layers
            layer, index = totals.layers[row], int(totals.filters[row])
            with lesioned(model, {layer: [index]}):
                loss, correct = by_class(model(images))
            np.testing.assert_allclose(totals.loss[row], loss, rtol=1e-5, err_msg=f"{layer} {index}")
            assert totals.correct[row].tolist() == correct.tolist()
    # the per-task table is the sums of each task's classes, and equals the naive definition's
    fast = totals.task_losses({"a": [0, 1, 2], "b": [3, 4, 5]})
    reference = reference_lesion_sweep(model, data, layers=LAYERS)
    both = fast.merge(reference, on=["layer", "filter", "task"], suffixes=("", "_ref"), validate="one_to_one")
    assert len(both) == len(fast) == len(reference)
    for column in ("loss", "intact_loss"):
        assert abs(both[column] - both[f"{column}_ref"]).max() < 1e-5
    for column in ("accuracy", "intact_accuracy"):
        assert (both[column] == both[f"{column}_ref"]).all()
    assert abs(both["loss"] - both["intact_loss"]).max() > 1e-2  # the lesions matter


GROUPINGS = {
    "random split": {"pseudo1": [0, 4, 5], "pseudo2": [1, 2, 3]},
    "uneven split": {"pseudo1": [2], "pseudo2": [0, 1, 3, 4, 5]},
    "three tasks": {"x": [0, 3], "y": [1, 4], "z": [2, 5]},
}


@pytest.mark.parametrize("name", list(GROUPINGS))
def test_ranking_of_any_grouping_from_the_table_equals_a_sweep_of_relabelled_images(name):
    grouping = GROUPINGS[name]
    model, data = tiny_vgg(seed=13), tiny_images(seed=14, counts=COUNTS)
    table = class_lesion_sweep(model, data, batch_size=8)
    from_table = oneshot_ranking(table.task_losses(grouping))
    swept = oneshot_ranking(lesion_sweep(model, regroup(data, grouping), batch_size=8))
    assert list(from_table.columns) == list(swept.columns) and len(from_table) == len(swept)
    assert set(from_table["task"]) == set(grouping)
    for column in ("layer", "task", "rank", "filter"):  # the same order of filters in every layer and task
        assert (from_table[column].to_numpy() == swept[column].to_numpy()).all(), column
    np.testing.assert_allclose(from_table["loss"], swept["loss"], rtol=1e-6)
    # teeth: the grouping matters (the real tasks rank the filters otherwise)
    real = oneshot_ranking(table.task_losses({"a": [0, 1, 2], "b": [3, 4, 5]}))
    assert not np.array_equal(
        real.query("task == 'a'")["filter"], from_table.query(f"task == '{list(grouping)[0]}'")["filter"]
    )


def test_per_task_losses_of_the_sweep_come_from_its_table_to_the_last_bit():
    model, data = tiny_vgg(seed=15, batch_norm=True), tiny_images(seed=16)
    sweep = lesion_sweep(model, data, layers=["conv2_1", "conv4_3"], batch_size=6)
    table = class_lesion_sweep(model, data, layers=["conv2_1", "conv4_3"], batch_size=6)
    pd.testing.assert_frame_equal(sweep, table.task_losses({"a": [2, 1, 0], "b": [5, 3, 4]}))  # any listing of labels
    assert sweep.attrs["plans"].keys() == {"conv2_1", "conv4_3"}


def test_table_survives_its_frames_and_refuses_incomplete_ones():
    model, data = tiny_vgg(seed=17), tiny_images(seed=18)
    table = class_lesion_sweep(model, data, layers=["conv1_1", "conv5_3"])
    lesions, intact = table.frames()
    assert len(lesions) == len(table.filters) * 6 and list(intact["label"]) == list(range(6))
    back = ClassTotals.from_frames(lesions, intact)
    for field in ("layers", "filters", "loss", "correct", "images", "intact_loss", "intact_correct"):
        assert np.array_equal(getattr(back, field), getattr(table, field)), field
    assert list(back.layers[:3]) == ["conv1_1"] * 3 and set(back.layers) == {"conv1_1", "conv5_3"}
    shuffled = lesions.sample(frac=1.0, random_state=0)  # rows in any order: lesions by first appearance
    again = ClassTotals.from_frames(shuffled, intact)
    order = [list(zip(again.layers, again.filters)).index(key) for key in zip(table.layers, table.filters)]
    assert np.array_equal(again.loss[order], table.loss)
    with pytest.raises(ValueError, match="one row per lesion and label"):
        ClassTotals.from_frames(lesions.iloc[1:], intact)
    with pytest.raises(ValueError, match="one row per lesion and label"):
        ClassTotals.from_frames(pd.concat([lesions.iloc[:1], lesions.iloc[2:], lesions.iloc[:1]]), intact)
    with pytest.raises(ValueError, match="no images"):
        table.task_losses({"a": [0, 1, 2], "nothing": []})
