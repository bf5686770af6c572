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

NULL_LEVEL = 0.95  # the null band: 2.5 and 97.5 percentiles
NULL_COLUMNS = ("null_mean", "null_low", "null_high", "p_value", "n_null")
ROW_KEYS = ("layer", "fraction", "scope", "task_a", "task_b")


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


def with_null(segregation: pd.DataFrame, null: pd.DataFrame, level: float = NULL_LEVEL) -> pd.DataFrame:
    """The observed segregation table with NULL_COLUMNS added per (layer, fraction, scope, pair).

    `null` holds the null partitions' segregation rows (column `partition`, pairs named by the real tasks:
    `as_real_pairs`); ValueError when an observed row has no null rows."""
    grouped = {key: rows["si"].to_numpy() for key, rows in null.groupby(list(ROW_KEYS), sort=False)}
    columns: dict[str, list[float]] = {name: [] for name in NULL_COLUMNS}
    for row in segregation.itertuples(index=False):
        key = tuple(getattr(row, name) for name in ROW_KEYS)
        if key not in grouped:
            raise ValueError(f"the null has no partitions for {dict(zip(ROW_KEYS, key))}")
        values = grouped[key]
        mean, low, high = null_band(values, level)
        for name, value in zip(
            NULL_COLUMNS,
            (mean, low, high, permutation_p_value(row.si, values), np.count_nonzero(np.isfinite(values))),
        ):
            columns[name].append(value)
    return segregation.assign(**columns).astype({"n_null": np.int64})
