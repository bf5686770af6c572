"""From per-image predictions to accuracies, normalised performance, proportional drops and segregation indices.

Every quantity has a point estimate (on the test set itself) and a 95% percentile interval from the
hierarchical bootstrap (`analysis.bootstrap`). All conditions of one evaluated task (intact, every lesion,
both accuracy scopes) share the same resamples, so a ratio such as lesioned / intact accuracy is formed
resample by resample. The resamples of different evaluated tasks are independent (different images).

Accuracy scopes: "all_outputs" is top-1 over the whole output layer (the paper's measure and the default);
"task_outputs" is top-1 restricted to the evaluated task's own outputs.

Definitions (METHOD): normalised performance P(X|Y) = accuracy on X with Y's top filters lesioned / intact
accuracy on X; proportional drop d(X|Y) = 1 - P(X|Y); for tasks A, B the segregation index of a layer is
SI(A, B) = 1/2 [d(A|A) - d(B|A) + d(B|B) - d(A|B)].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from analysis.bootstrap import DEFAULT_RESAMPLES, bootstrap_accuracies, percentile_interval, task_rng
from analysis.segregation.settings import SCOPES
from lightning_modules.layer_names import CONV_LAYERS

INTACT_LAYER = "intact"
NO_TASK = "none"
PREDICTION_COLUMNS = (
    "layer",
    "lesioned_task",
    "fraction",
    "eval_task",
    "image",
    "class",
    "label",
    "prediction",
    "correct",
    "prediction_within_task",
    "correct_within_task",
)
CONDITION = ["layer", "lesioned_task", "fraction"]
CURVE_KEYS = ["layer", "layer_index", "scope", "task_a", "task_b"]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap resamples."""

    point: float
    samples: np.ndarray

    def row(self, name: str, level: float) -> dict[str, float]:
        """Columns `name`, `name_low`, `name_high` for a table."""
        low, high = percentile_interval(self.samples, level)
        return {name: self.point, f"{name}_low": float(low), f"{name}_high": float(high)}

    def __sub__(self, other: Estimate) -> Estimate:
        with np.errstate(invalid="ignore"):
            return Estimate(self.point - other.point, self.samples - other.samples)

    def __add__(self, other: Estimate) -> Estimate:
        with np.errstate(invalid="ignore"):
            return Estimate(self.point + other.point, self.samples + other.samples)

    def scaled(self, factor: float) -> Estimate:
        """This estimate times a constant."""
        return Estimate(self.point * factor, self.samples * factor)

    def ratio(self, other: Estimate) -> Estimate:
        """This estimate divided by another, resample by resample (NaN where the divisor is 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            point = self.point / other.point if other.point else float("nan")
            return Estimate(point, self.samples / other.samples)


Key = tuple[str, str, float, str, str]  # layer, lesioned_task, fraction, eval_task, scope


def layer_index(layer: str, units: Sequence[str] = CONV_LAYERS) -> int:
    """The layer's place among the network's lesion units in forward order (`units`; VGG16's: 1..13), 0 for the intact
    network."""
    return list(units).index(layer) + 1 if layer in units else 0


def _eval_task_correctness(frame: pd.DataFrame) -> tuple[list[tuple], np.ndarray, np.ndarray]:
    """One evaluated task's predictions as (conditions x scopes) rows by images, with each image's class (the scopes
    whose column the predictions hold)."""
    conditions: list[tuple] = []
    rows: list[np.ndarray] = []
    for scope, column in SCOPES.items():
        if column not in frame.columns:
            continue
        table = frame.pivot(index=CONDITION, columns="image", values=column)
        if table.isna().any().any():
            raise ValueError(
                f"predictions for {frame['eval_task'].iat[0]!r} do not cover the same images in every condition"
            )
        conditions += [(*condition, scope) for condition in table.index]
        rows.append(table.to_numpy(dtype=np.float32))
    labels = frame.drop_duplicates("image").set_index("image")["label"].reindex(table.columns).to_numpy()
    return conditions, np.concatenate(rows), labels


def resample_accuracies(
    predictions: pd.DataFrame, n_bootstraps: int = DEFAULT_RESAMPLES, seed: int = 0
) -> dict[Key, Estimate]:
    """Accuracy with bootstrap resamples for every (condition, evaluated task, scope) in the predictions."""
    estimates: dict[Key, Estimate] = {}
    for eval_task, frame in predictions.groupby("eval_task", sort=False):
        conditions, correct, classes = _eval_task_correctness(frame)
        samples = bootstrap_accuracies(correct, classes, n_bootstraps, task_rng(seed, str(eval_task)))
        points = correct.mean(axis=1)
        for column, (layer, lesioned, fraction, scope) in enumerate(conditions):
            estimates[(layer, lesioned, float(fraction), str(eval_task), scope)] = Estimate(
                float(points[column]), samples[:, column]
            )
    return estimates


def proportional_drops(accuracies: dict[Key, Estimate]) -> dict[Key, Estimate]:
    """d(X|Y) = 1 - lesioned accuracy / intact accuracy, for every lesion condition and evaluated task."""
    drops: dict[Key, Estimate] = {}
    for (layer, lesioned, fraction, eval_task, scope), accuracy in accuracies.items():
        if layer == INTACT_LAYER:
            continue
        intact = accuracies[(INTACT_LAYER, NO_TASK, 0.0, eval_task, scope)]
        normalised = accuracy.ratio(intact)
        drops[(layer, lesioned, fraction, eval_task, scope)] = Estimate(
            1.0 - normalised.point, 1.0 - normalised.samples
        )
    return drops


def segregation_index(
    drops: dict[Key, Estimate], layer: str, fraction: float, task_a: str, task_b: str, scope: str
) -> Estimate:
    """SI(A, B) = 1/2 [d(A|A) - d(B|A) + d(B|B) - d(A|B)] for one layer, fraction and scope."""

    def d(evaluated: str, lesioned: str) -> Estimate:
        return drops[(layer, lesioned, fraction, evaluated, scope)]

    return (d(task_a, task_a) - d(task_b, task_a) + d(task_b, task_b) - d(task_a, task_b)).scaled(0.5)


def accuracy_table(
    accuracies: dict[Key, Estimate], level: float = 0.95, units: Sequence[str] = CONV_LAYERS
) -> pd.DataFrame:
    """One row per (layer, lesioned task, fraction, evaluated task, scope): accuracy with its interval."""
    rows = [
        {
            "layer": layer,
            "layer_index": layer_index(layer, units),
            "lesioned_task": lesioned,
            "fraction": fraction,
            "eval_task": eval_task,
            "scope": scope,
            **estimate.row("accuracy", level),
        }
        for (layer, lesioned, fraction, eval_task, scope), estimate in accuracies.items()
    ]
    return pd.DataFrame(rows).sort_values(
        ["scope", "eval_task", "layer_index", "lesioned_task", "fraction"], ignore_index=True
    )


def drop_table(
    accuracies: dict[Key, Estimate],
    drops: dict[Key, Estimate],
    level: float = 0.95,
    units: Sequence[str] = CONV_LAYERS,
) -> pd.DataFrame:
    """One row per lesion and evaluated task: accuracy, normalised performance and proportional drop, with intervals."""
    rows = []
    for key, drop in drops.items():
        layer, lesioned, fraction, eval_task, scope = key
        normalised = Estimate(1.0 - drop.point, 1.0 - drop.samples)
        rows.append(
            {
                "layer": layer,
                "layer_index": layer_index(layer, units),
                "fraction": fraction,
                "lesioned_task": lesioned,
                "eval_task": eval_task,
                "scope": scope,
                **accuracies[key].row("accuracy", level),
                **normalised.row("normalised", level),
                **drop.row("drop", level),
            }
        )
    return pd.DataFrame(rows).sort_values(
        ["scope", "fraction", "layer_index", "lesioned_task", "eval_task"], ignore_index=True
    )


def segregation_table(
    drops: dict[Key, Estimate], tasks: Sequence[str], level: float = 0.95, units: Sequence[str] = CONV_LAYERS
) -> pd.DataFrame:
    """One row per (layer, fraction, scope, pair of tasks in label-space order): the segregation index with its
    interval."""
    settings = sorted(
        {(layer, fraction, scope) for layer, _, fraction, _, scope in drops},
        key=lambda s: (s[2], s[1], layer_index(s[0], units)),
    )
    rows = [
        {
            "layer": layer,
            "layer_index": layer_index(layer, units),
            "fraction": fraction,
            "scope": scope,
            "task_a": task_a,
            "task_b": task_b,
            **segregation_index(drops, layer, fraction, task_a, task_b, scope).row("si", level),
        }
        for layer, fraction, scope in settings
        for task_a, task_b in combinations(tasks, 2)
    ]
    return pd.DataFrame(rows)


def fraction_curve_areas(
    drops: dict[Key, Estimate], tasks: Sequence[str], level: float = 0.95, units: Sequence[str] = CONV_LAYERS
) -> pd.DataFrame:
    """One row per (layer, scope, pair of tasks): the area of the index-by-fraction curve over every lesion fraction
    analysed (`fraction_curve_area`) with its interval, from the same resamples as the index; empty with fewer than
    two fractions. Layers are numbered by their place among the network's `units`."""
    fractions = sorted({fraction for _, _, fraction, _, _ in drops})
    if len(fractions) < 2:
        return pd.DataFrame(columns=[*CURVE_KEYS, "area", "area_low", "area_high"])
    rows = []
    for layer, scope in sorted({(key[0], key[4]) for key in drops}, key=lambda s: (s[1], layer_index(s[0], units))):
        for task_a, task_b in combinations(tasks, 2):
            curve = [segregation_index(drops, layer, fraction, task_a, task_b, scope) for fraction in fractions]
            points = np.array([estimate.point for estimate in curve])
            samples = np.stack([estimate.samples for estimate in curve], axis=-1)
            area = Estimate(float(fraction_curve_area(fractions, points)), fraction_curve_area(fractions, samples))
            rows.append(
                {
                    "layer": layer,
                    "layer_index": layer_index(layer, units),
                    "scope": scope,
                    "task_a": task_a,
                    "task_b": task_b,
                    **area.row("area", level),
                }
            )
    return pd.DataFrame(rows)


def segregation_tables(
    predictions: pd.DataFrame,
    tasks: Sequence[str],
    n_bootstraps: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
    units: Sequence[str] = CONV_LAYERS,
) -> dict[str, pd.DataFrame]:
    """All tables of the analysis from per-image predictions: accuracy, drops (with normalised performance),
    segregation; layers numbered by their place among the network's `units` (`layer_index`); and the area of each
    layer's index-by-fraction curve (`fraction_curve`; empty with one fraction)."""
    accuracies = resample_accuracies(predictions, n_bootstraps, seed)
    drops = proportional_drops(accuracies)
    return {
        "accuracy": accuracy_table(accuracies, level, units),
        "drops": drop_table(accuracies, drops, level, units),
        "segregation": segregation_table(drops, tasks, level, units),
        "fraction_curve": fraction_curve_areas(drops, tasks, level, units),
    }


def fraction_curve_area(fractions: Sequence[float], values: np.ndarray) -> np.ndarray:
    """The area under the index-by-fraction curve (trapezoids) divided by the span of the fractions: the curve's mean
    height, on the index's own scale, so that a conclusion rests on every fraction analysed and not on one.

    `values` holds the index at the ascending `fractions` along its last axis (a point estimate, or resamples in
    earlier axes); at least two fractions."""
    x = np.asarray(fractions, dtype=np.float64)
    if x.size < 2 or np.any(np.diff(x) <= 0):
        raise ValueError(f"the curve's area needs two or more ascending fractions, not {list(fractions)}")
    return np.trapezoid(np.asarray(values, dtype=np.float64), x, axis=-1) / (x[-1] - x[0])
