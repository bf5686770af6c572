"""Accuracies, proportional drops and the segregation index from per-image predictions with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.segregation.indices import INTACT_LAYER, NO_TASK, PREDICTION_COLUMNS, segregation_tables
from analysis.segregation.task_groups import random_grouping
from data_pipeline.label_space import LabelSpace

CLASSES, PER_CLASS = 10, 10


def predictions(
    accuracy_of, tasks=("face", "object"), layers=("conv1_1", "conv5_3"), fraction=0.2, within_task_accuracy_of=None
) -> pd.DataFrame:
    """Exact per-image predictions: the first round(accuracy * n) images of each class are right, over all outputs
    (`accuracy_of(layer, lesioned, evaluated)`) and within the task's outputs (`within_task_accuracy_of`, default
    the same); an image right over all outputs is right within its task's outputs too when the latter is higher."""
    within_task_accuracy_of = within_task_accuracy_of or accuracy_of
    frames = []
    conditions = [(INTACT_LAYER, NO_TASK, 0.0)] + [(layer, task, fraction) for layer in layers for task in tasks]
    position = np.tile(np.arange(PER_CLASS), CLASSES)
    for offset, eval_task in enumerate(tasks):
        labels = np.repeat(np.arange(CLASSES), PER_CLASS) + offset * CLASSES
        for layer, lesioned, frac in conditions:
            right = position < round(accuracy_of(layer, lesioned, eval_task) * PER_CLASS)
            right_within = position < round(within_task_accuracy_of(layer, lesioned, eval_task) * PER_CLASS)
            frames.append(
                pd.DataFrame(
                    {
                        "layer": layer,
                        "lesioned_task": lesioned,
                        "fraction": frac,
                        "eval_task": eval_task,
                        "image": np.arange(labels.size),
                        "class": labels.astype(str),
                        "label": labels,
                        "prediction": np.where(right, labels, -1),
                        "correct": right,
                        "prediction_within_task": np.where(right_within, labels, -1),
                        "correct_within_task": right_within,
                    },
                    columns=list(PREDICTION_COLUMNS),
                )
            )
    return pd.concat(frames, ignore_index=True)


def accuracies_from(intact: dict[str, float], lesions: dict[str, dict[tuple[str, str], float]]):
    """accuracy_of(layer, lesioned, evaluated) from intact accuracies and, per layer, (lesioned, evaluated) ->
    accuracy."""

    def accuracy_of(layer, lesioned, evaluated):
        return intact[evaluated] if layer == INTACT_LAYER else lesions[layer][(lesioned, evaluated)]

    return accuracy_of


# Asymmetric on purpose, so that dividing by the other task's intact accuracy, swapping d(X|Y) with d(Y|X) or
# mixing the two accuracy scopes each changes a number below. Keys: (lesioned task, evaluated task).
ALL_OUTPUTS = accuracies_from(
    {"face": 0.8, "object": 0.5},
    {
        "conv5_3": {("face", "face"): 0.2, ("face", "object"): 0.4, ("object", "face"): 0.6, ("object", "object"): 0.1},
        # conv1_1: a lesion of either task's filters gives the same predictions on each evaluated task
        "conv1_1": {("face", "face"): 0.4, ("face", "object"): 0.2, ("object", "face"): 0.4, ("object", "object"): 0.2},
    },
)
TASK_OUTPUTS = accuracies_from(
    {"face": 1.0, "object": 0.9},
    {
        "conv5_3": {("face", "face"): 0.3, ("face", "object"): 0.6, ("object", "face"): 0.9, ("object", "object"): 0.3},
        "conv1_1": {("face", "face"): 0.5, ("face", "object"): 0.6, ("object", "face"): 0.5, ("object", "object"): 0.6},
    },
)


def test_drops_and_index_match_their_definitions_worked_by_hand():
    tables = segregation_tables(
        predictions(ALL_OUTPUTS, within_task_accuracy_of=TASK_OUTPUTS), ["face", "object"], n_bootstraps=200, seed=0
    )
    drops = tables["drops"].set_index(["scope", "layer", "lesioned_task", "eval_task"])
    by_hand = {  # d(X|Y) = 1 - accuracy on X with Y's filters lesioned / intact accuracy on X
        ("all_outputs", "face", "face"): 1 - 0.2 / 0.8,  # 0.75
        ("all_outputs", "face", "object"): 1 - 0.4 / 0.5,  # 0.2 = d(O|F)
        ("all_outputs", "object", "face"): 1 - 0.6 / 0.8,  # 0.25 = d(F|O)
        ("all_outputs", "object", "object"): 1 - 0.1 / 0.5,  # 0.8
        ("task_outputs", "face", "face"): 1 - 0.3 / 1.0,  # 0.7
        ("task_outputs", "face", "object"): 1 - 0.6 / 0.9,  # 1/3
        ("task_outputs", "object", "face"): 1 - 0.9 / 1.0,  # 0.1
        ("task_outputs", "object", "object"): 1 - 0.3 / 0.9,  # 2/3
    }
    for (scope, lesioned, evaluated), drop in by_hand.items():
        row = drops.loc[(scope, "conv5_3", lesioned, evaluated)]
        assert row["drop"] == pytest.approx(drop), (scope, lesioned, evaluated)
        assert row["normalised"] == pytest.approx(1 - drop), (scope, lesioned, evaluated)
    accuracy = tables["accuracy"].set_index(["scope", "layer", "eval_task"])["accuracy"]
    assert accuracy[("all_outputs", "intact", "object")] == pytest.approx(0.5)
    assert accuracy[("task_outputs", "intact", "object")] == pytest.approx(0.9)

    si = tables["segregation"].set_index(["scope", "layer"])
    # SI = 1/2 [d(F|F) - d(O|F) + d(O|O) - d(F|O)]
    assert si.loc[("all_outputs", "conv5_3"), "si"] == pytest.approx(0.5 * (0.75 - 0.2 + 0.8 - 0.25))  # 0.55
    assert si.loc[("task_outputs", "conv5_3"), "si"] == pytest.approx(0.5 * (0.7 - 1 / 3 + 2 / 3 - 0.1))  # 0.4667
    # its interval: every class alike, so only the images vary; the face half of the index is the share of the 80
    # intact-right face images that the face lesion turns wrong and the object lesion does not (4 of 8 positions),
    # the object half the same share of the 50 intact-right object images (3 of 5): by the delta method
    # SE = 1/2 sqrt(0.5 x 0.5 / 80 + 0.6 x 0.4 / 50) = 0.0445, a 95% half-width of 0.087 (the percentile interval of
    # 200 resamples: within 0.025 of it on either side)
    half_width = 1.96 * 0.5 * np.sqrt(0.5 * 0.5 / 80 + 0.6 * 0.4 / 50)
    row = si.loc[("all_outputs", "conv5_3")]
    assert row["si"] - row["si_low"] == pytest.approx(half_width, abs=0.025)
    assert row["si_high"] - row["si"] == pytest.approx(half_width, abs=0.025)
    # conv1_1 hurts each task alike whichever task's filters are lesioned: every resample's index is exactly 0
    for scope in ("all_outputs", "task_outputs"):
        row = si.loc[(scope, "conv1_1")]
        assert row["si"] == pytest.approx(0.0, abs=1e-9)
        assert row["si_low"] == pytest.approx(0.0, abs=1e-6) and row["si_high"] == pytest.approx(0.0, abs=1e-6)


def test_more_than_two_tasks_give_every_pair_from_its_own_drops():
    tasks = ("face", "object", "food")
    intact = {"face": 0.8, "object": 0.5, "food": 1.0}
    drop = {  # d(evaluated | lesioned), all different
        ("face", "face"): 0.75,
        ("face", "object"): 0.25,
        ("face", "food"): 0.5,
        ("object", "face"): 0.2,
        ("object", "object"): 0.8,
        ("object", "food"): 0.4,
        ("food", "face"): 0.1,
        ("food", "object"): 0.3,
        ("food", "food"): 0.9,
    }
    lesions = {
        layer: {
            (lesioned, evaluated): intact[evaluated] * (1 - drop[(evaluated, lesioned)])
            for lesioned in tasks
            for evaluated in tasks
        }
        for layer in ("conv1_1", "conv5_3")
    }
    tables = segregation_tables(predictions(accuracies_from(intact, lesions), tasks=tasks), tasks, n_bootstraps=50)
    assert len(tables["drops"].query("scope == 'all_outputs' and layer == 'conv1_1'")) == 9  # the full d matrix
    si = (
        tables["segregation"]
        .query("scope == 'all_outputs' and layer == 'conv5_3'")
        .set_index(["task_a", "task_b"])["si"]
    )
    assert si.to_dict() == pytest.approx(
        {
            ("face", "object"): 0.5 * (0.75 - 0.2 + 0.8 - 0.25),  # 0.55
            ("face", "food"): 0.5 * (0.75 - 0.1 + 0.9 - 0.5),  # 0.525
            ("object", "food"): 0.5 * (0.8 - 0.3 + 0.9 - 0.4),  # 0.5
        }
    )


def test_random_pseudo_tasks_partition_the_classes_in_the_original_sizes():
    label_space = LabelSpace.from_classes({"face": [f"f{i}" for i in range(7)], "object": [f"o{i}" for i in range(4)]})
    grouping = random_grouping(label_space, seed=3)
    assert [len(labels) for labels in grouping.values()] == [7, 4]
    assert sorted(np.concatenate(list(grouping.values())).tolist()) == list(range(11))
    assert not np.array_equal(grouping["pseudo1"], np.arange(7))  # shuffled, not the original split
    np.testing.assert_array_equal(random_grouping(label_space, seed=3)["pseudo2"], grouping["pseudo2"])


def test_top_fraction_count_rounds_to_nearest_by_default_or_down() -> None:
    from analysis.segregation.lesion_eval import Unit, lesion_plan
    from analysis.segregation.settings import SegregationSettings
    from common.errors import UserError
    from specialize.cli import build_parser
    from sweeps.ranking import lesion_count

    assert [lesion_count(0.2, n) for n in (64, 128, 256, 512)] == [13, 26, 51, 102]  # VGG16's layer widths
    assert [lesion_count(0.2, n, "floor") for n in (64, 128, 256, 512)] == [12, 25, 51, 102]
    assert lesion_count(0.15, 10) == 2 and lesion_count(0.15, 10, "floor") == 1  # halves go up, exactly
    ranking = pd.DataFrame({"layer": "conv1_1", "task": "face", "filter": np.arange(64)[::-1], "rank": np.arange(64)})
    [filters] = lesion_plan(ranking, [Unit("conv1_1", "face")], [0.2], "floor").values()
    assert filters[0.2] == list(range(63, 51, -1))  # the 12 best-ranked filters
    args = build_parser().parse_args(["segregation", "--sweep", "s", "--out", "o", "--rounding", "floor"])
    assert args.rounding == "floor" and SegregationSettings().rounding == "nearest"
    with pytest.raises(UserError, match="rounding is .ceil.; valid values: nearest, floor"):
        SegregationSettings(rounding="ceil")


def test_each_evaluated_task_is_resampled_independently_of_the_other():
    # Both tasks' predictions have the same layout and the same right and wrong images: with resamples shared
    # between the tasks, their bootstrap accuracies would move together (and the index's interval would shrink).
    from analysis.segregation.indices import resample_accuracies

    rng = np.random.default_rng(4)
    rows = predictions(lambda layer, lesioned, evaluated: 0.5)
    right = rng.random(CLASSES * PER_CLASS) < 0.6
    for task in ("face", "object"):
        mask = rows["eval_task"] == task
        rows.loc[mask, "correct"] = np.tile(right, mask.sum() // right.size)
    estimates = resample_accuracies(rows, n_bootstraps=1000, seed=3)
    face = estimates[(INTACT_LAYER, NO_TASK, 0.0, "face", "all_outputs")].samples
    other = estimates[(INTACT_LAYER, NO_TASK, 0.0, "object", "all_outputs")].samples
    assert estimates[(INTACT_LAYER, NO_TASK, 0.0, "face", "all_outputs")].point == pytest.approx(right.mean())
    assert abs(np.corrcoef(face, other)[0, 1]) < 0.1  # independent: correlation 0 +- 0.03


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_index_interval_equals_a_plain_bootstrap_of_the_definition(level):
    # Per resample, written out: each task's images drawn (classes, then images; the task's own generator), every
    # condition's accuracy on them, the drops against that resample's intact accuracy, the index; then percentiles.
    from analysis.bootstrap import resample_counts, task_rng

    rows = predictions(ALL_OUTPUTS)
    rng = np.random.default_rng(8)  # per-image noise on the planted accuracies, so that resamples differ
    rows["correct"] = rows["correct"] ^ (rng.random(len(rows)) < 0.15)
    tables = segregation_tables(rows, ["face", "object"], n_bootstraps=300, seed=5, level=level)
    accuracy = {}
    for task in ("face", "object"):
        frame = rows[rows["eval_task"] == task]
        labels = frame.drop_duplicates("image").sort_values("image")["label"].to_numpy()
        [counts] = list(resample_counts(labels, 300, task_rng(5, task)))
        for (layer, lesioned), condition in frame.groupby(["layer", "lesioned_task"]):
            correct = condition.sort_values("image")["correct"].to_numpy(dtype=float)
            accuracy[(layer, lesioned, task)] = counts @ correct / counts.sum(axis=1)

    def drop(evaluated, lesioned):
        return 1 - accuracy[("conv5_3", lesioned, evaluated)] / accuracy[(INTACT_LAYER, NO_TASK, evaluated)]

    index = 0.5 * (drop("face", "face") - drop("object", "face") + drop("object", "object") - drop("face", "object"))
    tail = 100 * (1 - level) / 2
    row = tables["segregation"].set_index(["scope", "layer"]).loc[("all_outputs", "conv5_3")]
    assert [row["si_low"], row["si_high"]] == pytest.approx(np.percentile(index, [tail, 100 - tail]), abs=1e-6)
    assert row["si_high"] - row["si_low"] > 0.05
