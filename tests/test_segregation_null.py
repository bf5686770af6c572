"""The permutation null: its p-value and band on planted nulls, and the partition schemes it draws."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.segregation.indices import fraction_curve_area
from analysis.segregation.null import area_with_null, as_real_pairs, null_band, permutation_p_value, with_null
from analysis.segregation.task_groups import null_partitions, random_grouping
from data_pipeline.label_space import LabelSpace

LABEL_SPACE = LabelSpace.from_classes({"face": [f"f{i}" for i in range(7)], "object": [f"o{i}" for i in range(4)]})


def test_p_value_counts_the_observed_partition_as_one_of_the_possible() -> None:
    null = np.arange(20) / 20  # 0.00, 0.05, ..., 0.95
    assert permutation_p_value(0.5, null) == pytest.approx((1 + 10) / 21)  # 0.50 .. 0.95 reach it
    assert permutation_p_value(2.0, null) == pytest.approx(1 / 21)  # above every null: the least p, 1 / (1 + P)
    assert permutation_p_value(-1.0, null) == pytest.approx(1.0)
    assert permutation_p_value(0.5, np.array([0.6, np.nan, 0.1])) == pytest.approx(2 / 3)  # NaN left out: P = 2
    assert math.isnan(permutation_p_value(0.5, np.array([np.nan])))


def test_p_value_is_uniform_when_the_observed_index_is_one_more_null_draw() -> None:
    rng = np.random.default_rng(1)
    draws = rng.normal(size=(4000, 20))
    p = np.array([permutation_p_value(row[0], row[1:]) for row in draws])  # 19 null partitions: p in {1/20, ..., 1}
    assert np.mean(p <= 0.05) == pytest.approx(0.05, abs=0.012)
    assert np.mean(p <= 0.5) == pytest.approx(0.5, abs=0.03)


def test_null_band_is_the_mean_and_central_percentiles() -> None:
    mean, low, high = null_band(np.arange(201.0))  # 0 .. 200: percentiles 2.5 and 97.5 fall on 5 and 195
    assert (mean, low, high) == pytest.approx((100.0, 5.0, 195.0))


def test_with_null_adds_the_band_and_p_value_per_layer() -> None:
    observed = pd.DataFrame(
        {
            "layer": ["conv1_1", "conv5_3"],
            "fraction": 0.2,
            "scope": "all_outputs",
            "task_a": "face",
            "task_b": "object",
            "si": [0.05, 0.7],
        }
    )
    nulls = pd.DataFrame(
        {
            "partition": np.tile(np.arange(1, 5), 2),
            "layer": np.repeat(["conv1_1", "conv5_3"], 4),
            "fraction": 0.2,
            "scope": "all_outputs",
            "task_a": "pseudo1",
            "task_b": "pseudo2",
            "si": [0.0, 0.1, 0.02, 0.08, 0.0, 0.1, -0.1, 0.0],
        }
    )
    table = with_null(observed, as_real_pairs(nulls, ["face", "object"]))
    assert table["null_mean"].tolist() == pytest.approx([0.05, 0.0])
    assert table["p_value"].tolist() == pytest.approx([(1 + 2) / 5, 1 / 5])  # 0.1, 0.08 reach 0.05; none reach 0.7
    assert table["n_null"].tolist() == [4, 4]
    assert table["null_low"].iloc[1] == pytest.approx(np.percentile([0.0, 0.1, -0.1, 0.0], 2.5))
    with pytest.raises(ValueError, match="no partitions"):
        with_null(observed.assign(fraction=0.3), as_real_pairs(nulls, ["face", "object"]))


def test_partition_schemes_sizes_and_halves() -> None:
    sizes = random_grouping(LABEL_SPACE, (3, 1), "sizes")
    halves = random_grouping(LABEL_SPACE, (3, 1), "halves")
    assert [len(v) for v in sizes.values()] == [7, 4]
    assert [len(v) for v in halves.values()] == [5, 6]  # 11 classes pooled: the last part one larger
    for grouping in (sizes, halves):
        assert sorted(np.concatenate(list(grouping.values())).tolist()) == list(range(11))
    with pytest.raises(ValueError, match="sizes, halves"):
        random_grouping(LABEL_SPACE, 0, "thirds")


def test_each_network_seed_draws_partitions_of_its_own() -> None:
    seed0, seed1 = null_partitions(LABEL_SPACE, 20, 0), null_partitions(LABEL_SPACE, 20, 1)
    assert len(seed0) == 20
    assert all(np.array_equal(a["pseudo1"], b["pseudo1"]) for a, b in zip(seed0, null_partitions(LABEL_SPACE, 20, 0)))
    distinct = {tuple(g["pseudo1"]) for g in seed0}
    assert len(distinct) >= 15  # C(11, 7) = 330 possible splits: few repeats among 20
    assert sum(np.array_equal(a["pseudo1"], b["pseudo1"]) for a, b in zip(seed0, seed1)) <= 2


def test_fraction_curve_area_is_the_curves_mean_height() -> None:
    fractions = [0.1, 0.2, 0.3, 0.5]
    assert fraction_curve_area(fractions, np.array([0.4, 0.4, 0.4, 0.4])) == pytest.approx(0.4)
    # trapezoids: 0.1 x (0 + 0.2) / 2 + 0.1 x (0.2 + 0.4) / 2 + 0.2 x (0.4 + 0.4) / 2 = 0.01 + 0.03 + 0.08 = 0.12
    assert fraction_curve_area(fractions, np.array([0.0, 0.2, 0.4, 0.4])) == pytest.approx(0.12 / 0.4)
    resamples = np.array([[0.4, 0.4, 0.4, 0.4], [0.0, 0.2, 0.4, 0.4]])
    assert fraction_curve_area(fractions, resamples) == pytest.approx([0.4, 0.3])
    with pytest.raises(ValueError, match="ascending"):
        fraction_curve_area([0.2], np.array([0.1]))


def test_the_curve_area_is_tested_against_the_partitions_areas() -> None:
    keys = {"layer": "conv5_3", "scope": "all_outputs", "task_a": "face", "task_b": "object"}
    curve = pd.DataFrame([{**keys, "layer_index": 13, "area": 0.3, "area_low": 0.2, "area_high": 0.4}])
    nulls = pd.DataFrame([{**keys, "partition": i, "area": a} for i, a in enumerate([0.0, 0.35, 0.1, np.nan], 1)])
    [row] = area_with_null(curve, nulls).to_dict("records")
    assert row["area_p_value"] == pytest.approx((1 + 1) / (1 + 3))  # 0.35 reaches 0.3; the NaN partition is left out
    assert (row["area_null_mean"], row["area_n_null"]) == (pytest.approx(0.15), 3)
    assert row["area"] == 0.3 and "p_value" not in row  # the index's own columns are not touched
