"""The permutation null of the segregation index: is a layer's index above what random partitions of the same classes
give?

P random partitions of the classes into pseudo-tasks (`task_groups.null_partitions`: scheme "sizes" or "halves",
partition i seeded by the network's seed and i) are each ranked and lesioned like the network's own tasks, giving P
null indices per layer, fraction and scope. Against them the observed index gets

- `null_mean`, `null_low`, `null_high`: the mean and the 2.5 and 97.5 percentiles (numpy's linear interpolation) of
  the null indices: the band the figures draw;
- `p_value` = (1 + #{null index >= observed}) / (1 + P): the one-sided permutation p-value, counting the observed
  partition as one of the possible ones, so it is never 0 (its least value is 1 / (1 + P): 0.048 for P = 20,
  0.005 for P = 200), and valid (P(p <= a) <= a under the null) for any P.

A null index that is not a number (a pseudo-task whose intact accuracy is 0) is left out: P is then the number of
finite ones, recorded as `n_null`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.segregation.indices import (
    fraction_curve_areas,
    proportional_drops,
    resample_accuracies,
    segregation_table,
)

NULL_LEVEL = 0.95  # the null band: 2.5 and 97.5 percentiles
NULL_COLUMNS = ("null_mean", "null_low", "null_high", "p_value", "n_null")
ROW_KEYS = ("layer", "fraction", "scope", "task_a", "task_b")
AREA_KEYS = ("layer", "scope", "task_a", "task_b")  # the fraction curve's area: one per layer, scope and pair


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """(1 + #{null >= observed}) / (1 + P) over the finite null values; NaN without any, or without an observed one."""
    finite = np.asarray(null, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0 or not np.isfinite(observed):
        return float("nan")
    return float((1 + np.count_nonzero(finite >= observed)) / (1 + finite.size))


def null_band(null: np.ndarray, level: float = NULL_LEVEL) -> tuple[float, float, float]:
    """(mean, low, high percentile) of the finite null values; NaNs without any."""
    finite = np.asarray(null, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan"), float("nan")
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(finite.mean()), float(low), float(high)


def as_real_pairs(null: pd.DataFrame, tasks: Sequence[str]) -> pd.DataFrame:
    """A null's segregation rows (pseudo-task pairs `pseudo<i>`, `pseudo<j>`) named by the real tasks they stand for:
    pseudo-task i for the i-th task, as `task_groups.random_grouping` sizes them."""
    names = {f"pseudo{i + 1}": task for i, task in enumerate(tasks)}
    return null.assign(task_a=null["task_a"].map(names), task_b=null["task_b"].map(names))


def with_null(
    segregation: pd.DataFrame,
    null: pd.DataFrame,
    level: float = NULL_LEVEL,
    value: str = "si",
    keys: Sequence[str] = ROW_KEYS,
) -> pd.DataFrame:
    """The observed table with NULL_COLUMNS added per row (`keys`: layer, fraction, scope, pair), for its `value`
    column (the index; or the fraction curve's `area`, keyed by AREA_KEYS).

    `null` holds the null partitions' rows (column `partition`, pairs named by the real tasks: `as_real_pairs`);
    ValueError when an observed row has no null rows."""
    grouped = {key: rows[value].to_numpy() for key, rows in null.groupby(list(keys), sort=False)}
    columns: dict[str, list[float]] = {name: [] for name in NULL_COLUMNS}
    for row in segregation.itertuples(index=False):
        key = tuple(getattr(row, name) for name in keys)
        if key not in grouped:
            raise ValueError(f"the null has no partitions for {dict(zip(keys, key))}")
        values = grouped[key]
        mean, low, high = null_band(values, level)
        for name, result in zip(
            NULL_COLUMNS,
            (mean, low, high, permutation_p_value(getattr(row, value), values), np.count_nonzero(np.isfinite(values))),
        ):
            columns[name].append(result)
    return segregation.assign(**columns).astype({"n_null": np.int64})


def partition_indices(predictions: pd.DataFrame, grouping_tasks: Sequence[str], seed: int) -> dict[str, pd.DataFrame]:
    """One null partition's point estimates from its per-image predictions: the index per layer, fraction, scope and
    pair (`segregation`) and the fraction curve's area (`fraction_curve`; empty with one fraction). Only the points
    count in a null, so one bootstrap resample is drawn."""
    drops = proportional_drops(resample_accuracies(predictions, 1, seed))
    columns = {"segregation": [*ROW_KEYS, "si"], "fraction_curve": [*AREA_KEYS, "area"]}
    tables = {
        "segregation": segregation_table(drops, grouping_tasks),
        "fraction_curve": fraction_curve_areas(drops, grouping_tasks),
    }
    return {name: table[columns[name]] for name, table in tables.items()}


def null_table(partitions: Sequence[dict[str, pd.DataFrame]], tasks: Sequence[str], name: str) -> pd.DataFrame:
    """The `name` table (`partition_indices`) of every null partition, numbered from 1, pairs named by the real
    `tasks`."""
    frames = [as_real_pairs(tables[name], tasks).assign(partition=i) for i, tables in enumerate(partitions, start=1)]
    return pd.concat(frames, ignore_index=True)


def area_with_null(curve: pd.DataFrame, null: pd.DataFrame, level: float = NULL_LEVEL) -> pd.DataFrame:
    """The fraction-curve table with the null of its area as columns `area_<null column>` (`area_p_value`, ...)."""
    tested = with_null(curve, null, level, value="area", keys=AREA_KEYS)
    return tested.rename(columns={name: f"area_{name}" for name in NULL_COLUMNS})
