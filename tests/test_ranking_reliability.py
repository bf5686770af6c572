"""Split-half reliability of the filter rankings and the overlap of two tasks' top sets, on planted per-class
tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.segregation.reliability import chance_jaccard, jaccard, split_half_reliability, top_set_overlap
from sweeps.class_totals import ClassTotals

LAYERS = {"conv1_1": 64, "conv2_1": 128}
CLASSES, IMAGES = 20, 10  # classes 0-9 task "face", 10-19 task "object"
GROUPING = {"face": np.arange(10), "object": np.arange(10, 20)}


def totals(per_class_loss) -> ClassTotals:
    """A per-class table with the given mean loss per (filter, class) (rows: every filter of LAYERS)."""
    layers = np.concatenate([[layer] * n for layer, n in LAYERS.items()]).astype(object)
    filters = np.concatenate([np.arange(n) for n in LAYERS.values()])
    mean = per_class_loss(len(filters))
    images = np.full(CLASSES, IMAGES)
    return ClassTotals(
        layers=layers,
        filters=filters,
        loss=mean * IMAGES,
        correct=np.zeros((len(filters), CLASSES), dtype=np.int64),
        images=images,
        intact_loss=np.ones(CLASSES),
        intact_correct=np.zeros(CLASSES, dtype=np.int64),
    )


def test_chance_jaccard_by_hand() -> None:
    # 2 of 4 filters: overlap 0 (prob 1/6) -> 0, 1 (4/6) -> 1/3, 2 (1/6) -> 1; E = 4/18 + 1/6 = 7/18
    assert chance_jaccard(4, 2) == pytest.approx(7 / 18)
    assert chance_jaccard(10, 10) == pytest.approx(1.0)
    assert jaccard([1, 2, 3], [2, 3, 4]) == pytest.approx(2 / 4)


def test_planted_strong_filter_order_is_fully_reliable() -> None:
    rng = np.random.default_rng(0)
    planted = totals(lambda filters: np.arange(filters)[:, None] * 1.0 + rng.normal(0, 0.01, (filters, CLASSES)))
    table = split_half_reliability(planted, GROUPING, 0.2)
    assert len(table) == 4 and set(table["classes_per_half"]) == {5}
    assert table["jaccard"].tolist() == pytest.approx([1.0] * 4)
    assert table["spearman"].tolist() == pytest.approx([1.0] * 4)
    assert table["top"].tolist() == [13, 26, 13, 26]


def test_shuffled_losses_are_reliable_only_at_chance() -> None:
    rng = np.random.default_rng(1)
    table = pd.concat(
        [
            split_half_reliability(
                totals(lambda filters: rng.normal(2.0, 0.1, (filters, CLASSES))), GROUPING, 0.2, seed=seed
            )
            for seed in range(10)
        ]
    )
    chance = table["chance_jaccard"].to_numpy()
    assert chance[table["layer"] == "conv1_1"] == pytest.approx(chance_jaccard(64, 13))  # about 0.11
    assert table["jaccard"].mean() == pytest.approx(chance.mean(), abs=0.04)
    assert abs(table["spearman"].mean()) < 0.06  # 40 rows of 64 or 128 filters: standard error about 0.016


def test_a_task_of_one_class_gets_no_split() -> None:
    planted = totals(lambda filters: np.ones((filters, CLASSES)))
    table = split_half_reliability(planted, {"face": np.array([0]), "object": np.arange(10, 20)}, 0.2)
    assert set(table["task"]) == {"object"}


def test_top_set_overlap_of_two_tasks() -> None:
    filters = np.arange(10)
    ranking = pd.DataFrame(
        {
            "layer": "conv1_1",
            "layer_index": 1,
            "task": np.repeat(["face", "object"], 10),
            "rank": np.tile(np.arange(10), 2),
            "filter": np.concatenate([filters, filters[::-1]]),
            "loss": 1.0,
        }
    )
    overlap = top_set_overlap(ranking, ["face", "object"], 0.5)  # top 5: 0-4 vs 9-5, disjoint
    assert overlap[["top", "jaccard"]].iloc[0].tolist() == [5, 0.0]
    assert overlap["chance_jaccard"].iloc[0] == pytest.approx(chance_jaccard(10, 5))
    assert top_set_overlap(ranking.assign(filter=np.tile(filters, 2)), ["face", "object"], 0.5)["jaccard"].iloc[0] == 1
