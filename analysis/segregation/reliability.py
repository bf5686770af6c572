"""Do the top-fraction filter sets hold up? Split-half reliability of each task's ranking, and the overlap of two tasks'
top sets, each beside its chance value.

Split-half reliability: each task's ranking images are cut into two disjoint halves, the layer's filters are ranked
on each half alone (one-shot: by the mean cross-entropy with the filter lesioned), and per layer and task the two top
sets are compared: their Jaccard overlap |A & B| / |A | B| beside its chance value (two sets of that size drawn at
random), and the Spearman correlation of the two halves' losses over all the layer's filters.

The halves are halves of the task's *classes* (seeded), which makes them disjoint halves of the ranking images, and
makes the analysis exact and free: the sweep records per-class sums (`sweeps.class_totals`), and a half's ranking is
the one-shot ranking of that half's classes, read from the table without another pass. Halves of the images within
every class would need the sweep to keep sums per (class, half), which it does not. The class split asks more of a
ranking than an image split (the halves differ in images and in classes), so its reliability is a lower bound of
the image split's; a task of one class (the faces-as-one-class control) cannot be split and gets no value. A greedy
ranking's later rounds are not repeated per half: the reliability is that of its first, one-shot round.

Top-set overlap: per layer, the Jaccard overlap of two tasks' top sets in the sweep's ranking, beside chance.

Chance: two sets of k filters drawn independently at random from n share X ~ Hypergeometric(n, k, k) filters, so
the expected Jaccard overlap is E[X / (2k - X)] (computed exactly).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from sweeps.class_totals import ClassTotals, Grouping, task_means
from sweeps.ranking import by_loss, lesion_count

RELIABILITY_WARNING = 0.5  # a split-half Jaccard below this (and below twice chance) is flagged in the report


def jaccard(first: Sequence[int], second: Sequence[int]) -> float:
    """|A & B| / |A | B| of two sets of filters (1 for two empty sets)."""
    a, b = set(first), set(second)
    return len(a & b) / len(a | b) if a | b else 1.0


def chance_jaccard(num_filters: int, size: int) -> float:
    """The expected Jaccard overlap of two independent uniformly random `size`-subsets of `num_filters` filters."""
    if size == 0:
        return 1.0
    shared = np.arange(max(0, 2 * size - num_filters), size + 1)
    probability = stats.hypergeom.pmf(shared, num_filters, size, size)
    return float(np.sum(probability * shared / (2 * size - shared)))


def top_set(losses: pd.DataFrame, count: int) -> list[int]:
    """The `count` filters with the highest loss (ties by filter index, as the sweep ranks them)."""
    return [int(f) for f in by_loss(losses)["filter"].head(count)]


def split_classes(grouping: Grouping, seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each task's classes shuffled (seeded per task) and cut into two halves (the first one smaller when odd);
    tasks of one class are left out."""
    first, second = {}, {}
    for index, (task, labels) in enumerate(grouping.items()):
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size < 2:
            continue
        shuffled = np.random.default_rng((seed, index)).permutation(labels)
        first[task], second[task] = np.sort(shuffled[: labels.size // 2]), np.sort(shuffled[labels.size // 2 :])
    return first, second


def half_losses(totals: ClassTotals, halves: Grouping) -> pd.DataFrame:
    """Rows (layer, filter, task, loss) of the one-shot losses on each task's half of the classes."""
    loss, _ = task_means(totals.loss, totals.correct, totals.images, halves)
    return pd.DataFrame(
        {
            "layer": np.repeat(totals.layers, len(halves)),
            "filter": np.repeat(totals.filters, len(halves)),
            "task": np.tile(np.asarray(list(halves), dtype=object), len(totals.filters)),
            "loss": loss.ravel(),
        }
    )


def split_half_reliability(
    totals: ClassTotals, grouping: Grouping, fraction: float, *, rounding: str = "nearest", seed: int = 0
) -> pd.DataFrame:
    """Per layer and task: the Jaccard overlap of the top `fraction` on two disjoint halves of the task's classes
    (`jaccard`), its chance value (`chance_jaccard`) and the Spearman correlation of the halves' losses (`spearman`);
    `filters`, `top` (the top set's size) and `classes_per_half` beside them. Classes of which the sweep drew no
    image (it samples images per task, not per class) are left out."""
    swept = {task: [label for label in labels if totals.images[label] > 0] for task, labels in grouping.items()}
    first, second = split_classes(swept, seed)
    losses = [half_losses(totals, half) for half in (first, second)]
    rows = []
    for task in first:
        for layer in dict.fromkeys(totals.layers):
            a, b = (frame[(frame["layer"] == layer) & (frame["task"] == task)] for frame in losses)
            count = lesion_count(fraction, len(a), rounding)
            rows.append(
                {
                    "layer": layer,
                    "task": task,
                    "fraction": fraction,
                    "filters": len(a),
                    "top": count,
                    "classes_per_half": len(first[task]),
                    "jaccard": jaccard(top_set(a, count), top_set(b, count)),
                    "chance_jaccard": chance_jaccard(len(a), count),
                    "spearman": spearman(a, b),
                }
            )
    return pd.DataFrame(rows)


def spearman(first: pd.DataFrame, second: pd.DataFrame) -> float:
    """The Spearman correlation of two halves' losses of the same filters (NaN when either is constant)."""
    paired = first.set_index("filter")["loss"].align(second.set_index("filter")["loss"], join="inner")
    if paired[0].nunique() < 2 or paired[1].nunique() < 2:
        return float("nan")
    return float(stats.spearmanr(paired[0], paired[1]).statistic)


def top_set_overlap(
    ranking: pd.DataFrame, tasks: Sequence[str], fraction: float, rounding: str = "nearest"
) -> pd.DataFrame:
    """Per layer and pair of tasks: the Jaccard overlap of their top `fraction` in a ranking (ranking.parquet's
    columns) beside its chance value."""
    rows = []
    for layer, frame in ranking.groupby("layer", sort=False):
        tops: Mapping[str, list[int]] = {}
        for task in tasks:
            ranked = frame[frame["task"] == task].sort_values("rank")
            count = lesion_count(fraction, len(ranked), rounding)
            tops[task] = [int(f) for f in ranked["filter"].head(count)]
        for task_a, task_b in combinations(tasks, 2):
            rows.append(
                {
                    "layer": layer,
                    "task_a": task_a,
                    "task_b": task_b,
                    "fraction": fraction,
                    "top": len(tops[task_a]),
                    "jaccard": jaccard(tops[task_a], tops[task_b]),
                    "chance_jaccard": chance_jaccard(len(frame[frame["task"] == task_a]), len(tops[task_a])),
                }
            )
    return pd.DataFrame(rows)


def unreliable(reliability: pd.DataFrame) -> pd.DataFrame:
    """The rows whose top sets do not hold up: split-half Jaccard below RELIABILITY_WARNING and below twice chance."""
    flagged = (reliability["jaccard"] < RELIABILITY_WARNING) & (
        reliability["jaccard"] < 2 * reliability["chance_jaccard"]
    )
    return reliability[flagged]


def ranking_checks(
    sweep_dir: Path, ranking: pd.DataFrame, grouping: Grouping, fraction: float, rounding: str, seed: int
) -> dict[str, pd.DataFrame]:
    """The tables `reliability` (split-half, from the sweep's per-class table; empty for sweeps without one) and
    `overlap` (of the analysed tasks' top sets in `ranking`) at `fraction`."""
    from common.io import readable_parquet

    paths = [sweep_dir / "class_losses.parquet", sweep_dir / "class_intact.parquet"]
    reliability = pd.DataFrame()
    if all(readable_parquet(path) for path in paths):
        totals = ClassTotals.from_frames(*(pd.read_parquet(path) for path in paths))
        reliability = split_half_reliability(totals, grouping, fraction, rounding=rounding, seed=seed)
    return {"reliability": reliability, "overlap": top_set_overlap(ranking, list(grouping), fraction, rounding)}
