"""Accuracies, proportional drops and the segregation index from per-image predictions with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.indices import INTACT_LAYER, NO_TASK, PREDICTION_COLUMNS, segregation_tables
from analysis.task_groups import random_grouping
from data_pipeline.label_space import LabelSpace

CLASSES, PER_CLASS = 10, 10


def predictions(accuracy_of, tasks=("face", "object"), layers=("conv1_1", "conv5_3"), fraction=0.2) -> pd.DataFrame:
    """Exact per-image predictions: the first round(accuracy * n) images of each class are right."""
    frames = []
    conditions = [(INTACT_LAYER, NO_TASK, 0.0)] + [(layer, task, fraction) for layer in layers for task in tasks]
    for offset, eval_task in enumerate(tasks):
        labels = np.repeat(np.arange(CLASSES), PER_CLASS) + offset * CLASSES
        for layer, lesioned, frac in conditions:
            right = np.tile(np.arange(PER_CLASS), CLASSES) < round(accuracy_of(layer, lesioned, eval_task) * PER_CLASS)
            frames.append(pd.DataFrame({
                "layer": layer, "lesioned_task": lesioned, "fraction": frac, "eval_task": eval_task,
                "image": np.arange(labels.size), "class": labels.astype(str), "label": labels,
                "prediction": np.where(right, labels, -1), "correct": right,
                "prediction_within_task": np.where(right, labels, -1), "correct_within_task": right},
                columns=list(PREDICTION_COLUMNS)))
    return pd.concat(frames, ignore_index=True)


def test_drops_and_index_match_their_definitions():
    # intact 0.8 on both; conv5_3 lesions: own task -> 0.2, other task -> 0.6; conv1_1: everything -> 0.4
    def accuracy_of(layer, lesioned, evaluated):
        if layer == INTACT_LAYER:
            return 0.8
        if layer == "conv1_1":
            return 0.4
        return 0.2 if lesioned == evaluated else 0.6

    tables = segregation_tables(predictions(accuracy_of), ["face", "object"], n_bootstraps=200, seed=0)
    drops = tables["drops"].query("scope == 'all_outputs'").set_index(["layer", "lesioned_task", "eval_task"])
    assert drops.loc[("conv5_3", "face", "face"), "drop"] == pytest.approx(0.75)
    assert drops.loc[("conv5_3", "face", "object"), "drop"] == pytest.approx(0.25)
    assert drops.loc[("conv5_3", "face", "face"), "normalised"] == pytest.approx(0.25)
    si = tables["segregation"].query("scope == 'all_outputs'").set_index("layer")["si"]
    assert si["conv5_3"] == pytest.approx(0.5)  # 1/2 [0.75 - 0.25 + 0.75 - 0.25]
    assert si["conv1_1"] == pytest.approx(0.0)
    row = tables["segregation"].query("scope == 'all_outputs' and layer == 'conv5_3'").iloc[0]
    assert 0.3 < row["si_low"] < 0.5 < row["si_high"] < 0.7
    # conv1_1 hurts both tasks alike on every image, so every resample's index is exactly 0
    row = tables["segregation"].query("scope == 'all_outputs' and layer == 'conv1_1'").iloc[0]
    assert row["si_low"] == pytest.approx(0.0, abs=1e-6) and row["si_high"] == pytest.approx(0.0, abs=1e-6)


def test_more_than_two_tasks_give_every_pair():
    tasks = ("face", "object", "food")
    tables = segregation_tables(predictions(lambda layer, lesioned, evaluated: 0.5 if lesioned == evaluated else 0.9,
                                            tasks=tasks), tasks, n_bootstraps=50)
    pairs = set(zip(tables["segregation"]["task_a"], tables["segregation"]["task_b"]))
    assert pairs == {("face", "object"), ("face", "food"), ("object", "food")}
    assert len(tables["drops"].query("scope == 'all_outputs' and layer == 'conv1_1'")) == 9  # the full d matrix
    si = tables["segregation"]["si"].to_numpy()
    np.testing.assert_allclose(si, 1 - 0.5 / 0.9)


def test_random_pseudo_tasks_partition_the_classes_in_the_original_sizes():
    label_space = LabelSpace.from_classes({"face": [f"f{i}" for i in range(7)], "object": [f"o{i}" for i in range(4)]})
    grouping = random_grouping(label_space, seed=3)
    assert [len(labels) for labels in grouping.values()] == [7, 4]
    assert sorted(np.concatenate(list(grouping.values())).tolist()) == list(range(11))
    assert not np.array_equal(grouping["pseudo1"], np.arange(7))  # shuffled, not the original split
    np.testing.assert_array_equal(random_grouping(label_space, seed=3)["pseudo2"], grouping["pseudo2"])


def test_top_fraction_count_rounds_to_nearest_by_default_or_down() -> None:
    from analysis.lesion_eval import Unit, lesion_count, lesion_plan
    from analysis.settings import SegregationSettings
    from common.errors import UserError
    from specialize.cli import build_parser

    assert [lesion_count(0.2, n) for n in (64, 128, 256, 512)] == [13, 26, 51, 102]  # VGG16's layer widths
    assert [lesion_count(0.2, n, "floor") for n in (64, 128, 256, 512)] == [12, 25, 51, 102]
    assert lesion_count(0.15, 10) == 2 and lesion_count(0.15, 10, "floor") == 1  # halves go up, exactly
    ranking = pd.DataFrame({"layer": "conv1_1", "task": "face", "filter": np.arange(64)[::-1], "rank": np.arange(64)})
    [filters] = lesion_plan(ranking, [Unit("conv1_1", "face")], [0.2], "floor").values()
    assert filters[0.2] == list(range(63, 51, -1))  # the 12 best-ranked filters
    args = build_parser().parse_args(["segregation", "--sweep", "s", "--out", "o", "--rounding", "floor"])
    assert args.rounding == "floor" and SegregationSettings().rounding == "nearest"
    with pytest.raises(UserError, match="unknown rounding"):
        SegregationSettings(rounding="ceil")
