"""Hierarchical bootstrap of accuracies (METHOD): resample classes with replacement, then images within each class.

One call resamples one set of predictions (the test images of one task) and evaluates every condition
(intact, each lesion, each accuracy scope) on the same resamples, so quantities derived from them
(normalised performance, proportional drops, the segregation index) carry consistent intervals.

Vectorised: each resample is held as a vector of image multiplicities (how often each image was drawn),
and the accuracies of all conditions come from one matrix product, counts @ correctness.
Paper-sized test sets (1,714 + 423 classes x 50 images, 27 conditions, 1,000 resamples) take seconds
(benchmarks/bench_bootstrap.py).

Note: with independent images (no class effect) the two-stage bootstrap is conservative, its variance
up to twice the binomial one, because class resampling already carries the within-class noise; with
one class, or one image per class, it reduces to the ordinary bootstrap (the tests check this case).

Across networks (`nested_mean_resamples`, a study's `aggregate.bootstrap: hierarchical`): a third level on top, each
resample drawing the networks (seeds) with replacement and every drawn network a class-then-image resample of its own.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable, Iterator

import numpy as np

DEFAULT_RESAMPLES = 1000  # METHOD: 1,000 bootstrap resamples
DRAWS_PER_CHUNK = 1 << 22  # random draws held in memory at once (about 32 MiB of int64)


def task_rng(seed: int, task: str) -> np.random.Generator:
    """The generator for one task's resamples: fixed by the seed and the task's name, whatever other tasks exist."""
    return np.random.default_rng([seed, zlib.crc32(task.encode())])


def _class_blocks(class_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images grouped by class: the permutation that sorts them by class, each class's start and size."""
    order = np.argsort(class_ids, kind="stable")
    _, starts, sizes = np.unique(class_ids[order], return_index=True, return_counts=True)
    return order, starts, sizes


def resample_counts(class_ids: np.ndarray, n_resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yield chunks of hierarchical resamples as (chunk, n_images) float32 multiplicities, in original image order.

    Each resample draws as many classes as there are, with replacement, then for each drawn class as many
    of its images as it has, with replacement.
    """
    class_ids = np.asarray(class_ids)
    if class_ids.ndim != 1 or class_ids.size == 0:
        raise ValueError("class_ids must be a non-empty 1-D array")
    order, starts, sizes = _class_blocks(class_ids)
    n_classes, n_images, largest = len(sizes), class_ids.size, int(sizes.max())
    uniform = bool((sizes == largest).all())
    chunk = max(1, DRAWS_PER_CHUNK // (n_classes * largest))
    slots = np.arange(largest)
    for first in range(0, n_resamples, chunk):
        rows = min(chunk, n_resamples - first)
        drawn = rng.integers(0, n_classes, size=(rows, n_classes))
        if uniform:
            within = rng.integers(0, largest, size=(rows, n_classes, largest))
            keep = None
        else:
            size = sizes[drawn][..., None]
            within = (rng.random((rows, n_classes, largest)) * size).astype(np.int64)
            keep = slots < size
        sorted_position = starts[drawn][..., None] + within
        flat = np.arange(rows)[:, None, None] * n_images + sorted_position
        flat = flat[keep] if keep is not None else flat.ravel()
        counts = np.bincount(flat, minlength=rows * n_images).reshape(rows, n_images)
        original_order = np.empty_like(counts)
        original_order[:, order] = counts
        yield original_order.astype(np.float32)


def bootstrap_accuracies(
    correct: np.ndarray,
    class_ids: np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Accuracy of every condition on each hierarchical resample.

    `correct` is (n_conditions, n_images) (or (n_images,) for one condition) of 0/1 per image, all conditions
    evaluated on the same images; returns (n_resamples, n_conditions), every condition on the same resamples.
    """
    correct = np.atleast_2d(np.asarray(correct, dtype=np.float32))
    if correct.shape[1] != len(class_ids):
        raise ValueError(f"correct has {correct.shape[1]} images but class_ids has {len(class_ids)}")
    rng = rng if rng is not None else np.random.default_rng(0)
    chunks = [
        counts @ correct.T / counts.sum(axis=1, keepdims=True)
        for counts in resample_counts(class_ids, n_resamples, rng)
    ]
    return np.concatenate(chunks, axis=0).astype(np.float64)


def nested_mean_resamples(
    n_units: int,
    n_resamples: int,
    rng: np.random.Generator,
    unit_resamples: Callable[[int, int], np.ndarray],
) -> np.ndarray:
    """Resamples of a mean over independent units (networks), one level above each unit's own resampling.

    Each resample draws `n_units` units with replacement, and every draw of unit j takes a fresh resample of unit j's
    statistic: `unit_resamples(j, count)` returns `count` independent resamples, (count, ...) (e.g. the segregation
    index from a class-then-image resample of network j's test set). Exact, not a pool reused: unit j is asked once
    for as many resamples as it is drawn in all. Returns (n_resamples, ...), the mean over each resample's draws.
    """
    if n_units < 1:
        raise ValueError("the nested bootstrap needs at least one unit")
    drawn = rng.integers(0, n_units, size=(n_resamples, n_units))
    values: np.ndarray | None = None
    for unit in range(n_units):
        where = drawn == unit
        count = int(where.sum())
        if count == 0:
            continue
        samples = np.asarray(unit_resamples(unit, count), dtype=np.float64)
        if values is None:
            values = np.empty((n_resamples, n_units, *samples.shape[1:]))
        values[where] = samples
    assert values is not None  # some unit is drawn in every resample
    return values.mean(axis=1)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the first axis (the resamples); NaN resamples are ignored (all NaN: NaN)."""
    tail = 100.0 * (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(samples, [tail, 100.0 - tail], axis=0)
    return low, high
