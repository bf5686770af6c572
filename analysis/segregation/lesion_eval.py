"""Per-image predictions of a network with a layer's top-ranked filters lesioned, fanned out with Ray and resumable.

A unit of work is one (layer, lesioned task): the top fraction of that layer's filters in the task's ranking
is lesioned (with `sweeps.lesions.lesioned`) and every task's full test set is classified, once per fraction
(each batch is read once and classified at every fraction).
One more unit holds the intact network's predictions. Each finished unit is written atomically to
`<out>/units/<layer>__<task>.parquet`; a rerun skips the units already there.

Test sets are streamed, never held whole: an `EvalSet` names its image sources (a real task's test .beton,
read in file order with the eval transform, `BetonSource`; or tensors already in memory, `TensorSource`) and
keeps, batch by batch, the images of its own classes (a pseudo-task of the random-task control draws on
several real tasks' files). Images are regrouped into batches of exactly `batch_size` (as if the kept images
were one tensor cut into batches), so memory is bounded by the batch size and only per-image predictions
are kept. Ray tasks receive the sources' paths, not images.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import chain
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from analysis.segregation.indices import INTACT_LAYER, NO_TASK, PREDICTION_COLUMNS
from analysis.segregation.settings import DEFAULT_BATCH_SIZE
from common.ray_runner import Resources, WorkUnit, run_units
from lightning_modules.heads import OutputHeads
from lightning_modules.vgg import VGG
from sweeps.devices import on_device
from sweeps.lesions import lesioned

Batch = tuple[torch.Tensor, torch.Tensor]  # images (N, 3, H, W) and global labels (N,)


class ImageSource(Protocol):
    """Images with global labels, in a fixed order, as batches."""

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """The images in order, in batches of at most `batch_size`."""


@dataclass(frozen=True)
class BetonSource:
    """One real task's split in a .beton, read in file order with the eval transform, labels shifted by
    `label_offset`."""

    path: str
    label_offset: int
    resolution: int
    num_workers: int | None = None

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """The split's images in file order, one copied batch at a time."""
        from data_pipeline.sample import stream_batches

        return stream_batches(self.path, self.resolution, batch_size, self.label_offset, num_workers=self.num_workers)


@dataclass(frozen=True)
class TensorSource:
    """Images and global labels already in memory (tests, small jobs)."""

    images: torch.Tensor
    labels: torch.Tensor

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Consecutive slices of `batch_size` images."""
        for start in range(0, len(self.labels), batch_size):
            yield self.images[start : start + batch_size], self.labels[start : start + batch_size]


@dataclass(frozen=True)
class EvalSet:
    """One (pseudo-)task's test set: the images of its classes (`outputs`, global labels, also its output units)
    among `sources`, in source order; `class_names` names every global label."""

    task: str
    sources: tuple[ImageSource, ...]
    outputs: torch.Tensor
    class_names: np.ndarray

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """The task's images in order, in batches of exactly `batch_size` (the last one may be smaller)."""
        streamed = chain.from_iterable(source.batches(batch_size) for source in self.sources)
        return rebatch(
            (
                (images[keep], labels[keep])
                for images, labels in streamed
                for keep in [torch.isin(labels, self.outputs)]
            ),
            batch_size,
        )


def rebatch(batches: Iterable[Batch], batch_size: int) -> Iterator[Batch]:
    """Batches of any sizes regrouped into batches of `batch_size` (the last one may be smaller), in order."""
    images: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    count = 0
    for batch_images, batch_labels in batches:
        images.append(batch_images)
        labels.append(batch_labels)
        count += len(batch_labels)
        while count >= batch_size:
            joined_images, joined_labels = torch.cat(images), torch.cat(labels)
            yield joined_images[:batch_size], joined_labels[:batch_size]
            images, labels, count = [joined_images[batch_size:]], [joined_labels[batch_size:]], count - batch_size
    if count:
        yield torch.cat(images), torch.cat(labels)


@dataclass(frozen=True)
class Unit:
    """One unit of work: a layer and the task whose top filters are lesioned (or the intact network)."""

    layer: str
    task: str

    @property
    def name(self) -> str:
        """File name stem of the unit's predictions."""
        return f"{self.layer}__{self.task}"


INTACT_UNIT = Unit(INTACT_LAYER, NO_TASK)


def lesion_count(fraction: float, num_filters: int, rounding: str = "nearest") -> int:
    """Number of filters a fraction of a layer lesions: fraction x filters rounded to the nearest integer, halves up
    ("nearest": 20% of 64 -> 13), or down ("floor": 20% of 64 -> 12). The fraction counts as the decimal it is written
    as, so products are exact (0.15 x 10 is 1.5, not 1.4999999999999998)."""
    exact = Fraction(str(fraction)) * num_filters
    return math.floor(exact + Fraction(1, 2)) if rounding == "nearest" else math.floor(exact)


def top_filters(ranking: pd.DataFrame, layer: str, task: str, fraction: float, rounding: str = "nearest") -> list[int]:
    """The top `fraction` of `layer`'s filters in `task`'s ranking (rank 0 = most important), counted by `rounding`."""
    rows = ranking[(ranking["layer"] == layer) & (ranking["task"] == task)].sort_values("rank")
    if rows.empty:
        raise KeyError(f"the ranking has no rows for layer {layer} and task {task!r}")
    return [int(f) for f in rows["filter"].iloc[: lesion_count(fraction, len(rows), rounding)]]


def lesion_plan(
    ranking: pd.DataFrame, units: Sequence[Unit], fractions: Sequence[float], rounding: str = "nearest"
) -> dict[Unit, dict[float, list[int]]]:
    """For each unit, the filters lesioned at each fraction (none for the intact unit)."""
    return {
        unit: (
            {0.0: []}
            if unit == INTACT_UNIT
            else {fraction: top_filters(ranking, unit.layer, unit.task, fraction, rounding) for fraction in fractions}
        )
        for unit in units
    }


Predictions = tuple[np.ndarray, np.ndarray, np.ndarray]  # labels, the network's top-1, top-1 over the task's outputs


def predict(
    model: VGG,
    batches: Iterable[Batch],
    outputs: torch.Tensor,
    lesions: Mapping[float, Mapping[str, Sequence[int]]],
    heads: OutputHeads = OutputHeads(),
) -> dict[float, Predictions]:
    """Per fraction: labels, the network's top-1 answers (over all outputs, or over each image's head when `heads`
    are separate) and the top-1 over `outputs` (global labels) of the network with that fraction's `lesions`;
    each batch is read once and passed through every lesioned network."""
    results: dict[float, tuple[list, list, list]] = {fraction: ([], [], []) for fraction in lesions}
    device = next(model.parameters()).device
    with torch.inference_mode():
        for images, labels in batches:
            for fraction, lesion in lesions.items():
                with lesioned(model, lesion):
                    logits = model(images.to(device)).cpu()
                for values, batch in zip(
                    results[fraction], (labels, heads.answer(logits, labels), outputs[logits[:, outputs].argmax(dim=1)])
                ):
                    values.append(batch)
    return {fraction: tuple(torch.cat(values).numpy() for values in columns) for fraction, columns in results.items()}


def predictions_frame(
    unit: Unit, fraction: float, eval_set: EvalSet, labels: np.ndarray, overall: np.ndarray, within: np.ndarray
) -> pd.DataFrame:
    """The per-image prediction rows of one unit, fraction and evaluated task."""
    return pd.DataFrame(
        {
            "layer": unit.layer,
            "lesioned_task": unit.task,
            "fraction": float(fraction),
            "eval_task": eval_set.task,
            "image": np.arange(len(labels)),
            "class": eval_set.class_names[labels],
            "label": labels,
            "prediction": overall,
            "correct": overall == labels,
            "prediction_within_task": within,
            "correct_within_task": within == labels,
        },
        columns=list(PREDICTION_COLUMNS),
    )


def evaluate_unit(
    model: VGG,
    eval_sets: Sequence[EvalSet],
    unit: Unit,
    filters_by_fraction: Mapping[float, Sequence[int]],
    batch_size: int = DEFAULT_BATCH_SIZE,
    heads: OutputHeads = OutputHeads(),
) -> pd.DataFrame:
    """Predictions on every evaluated task with the unit's filters lesioned at each fraction; rows by fraction, then
    task, then image. Each task's test set is streamed once, in batches, for all fractions."""
    model.eval()
    lesions = {
        fraction: ({unit.layer: filters} if unit != INTACT_UNIT else {})
        for fraction, filters in filters_by_fraction.items()
    }
    predicted = [
        predict(model, eval_set.batches(batch_size), eval_set.outputs, lesions, heads) for eval_set in eval_sets
    ]
    return pd.concat(
        [
            predictions_frame(unit, fraction, eval_set, *by_fraction[fraction])
            for fraction in lesions
            for eval_set, by_fraction in zip(eval_sets, predicted)
        ],
        ignore_index=True,
    )


def evaluate_in_process(
    model: VGG,
    eval_sets: Sequence[EvalSet],
    plan: Mapping[Unit, Mapping[float, Sequence[int]]],
    batch_size: int = DEFAULT_BATCH_SIZE,
    heads: OutputHeads = OutputHeads(),
) -> pd.DataFrame:
    """All units' predictions in this process (no Ray, nothing written): for tests and small jobs."""
    return pd.concat(
        [evaluate_unit(model, eval_sets, unit, filters, batch_size, heads) for unit, filters in plan.items()],
        ignore_index=True,
    )


def unit_path(units_dir: Path, unit: Unit) -> Path:
    """Where a unit's predictions are stored."""
    return units_dir / f"{unit.name}.parquet"


def evaluate_on_worker(
    model: VGG,
    eval_sets: Sequence[EvalSet],
    unit: Unit,
    filters_by_fraction: Mapping[float, Sequence[int]],
    batch_size: int,
    heads: OutputHeads,
) -> pd.DataFrame:
    """`evaluate_unit` as a Ray task: on the GPU Ray assigned to it, or the CPU."""
    from common.ray_runner import worker_device

    with on_device(model, worker_device()) as (net, _):
        return evaluate_unit(net, eval_sets, unit, filters_by_fraction, batch_size, heads)


def evaluate_with_ray(
    model: VGG,
    eval_sets: Sequence[EvalSet],
    plan: Mapping[Unit, Mapping[float, Sequence[int]]],
    units_dir: Path,
    resources: Resources = Resources(),
    batch_size: int = DEFAULT_BATCH_SIZE,
    heads: OutputHeads = OutputHeads(),
) -> pd.DataFrame:
    """Evaluate the units not yet stored in `units_dir` as Ray tasks, writing each as it finishes; return all units.

    Needs a Ray session (`common.ray_runner.ray_session`).
    """
    import ray

    model_ref, sets_ref = ray.put(model), ray.put(list(eval_sets))
    units = [
        WorkUnit(unit_path(units_dir, unit), (model_ref, sets_ref, unit, dict(filters), batch_size, heads))
        for unit, filters in plan.items()
    ]
    run_units(evaluate_on_worker, units, resources, "lesioned evaluations")
    return pd.concat([pd.read_parquet(unit.path) for unit in units], ignore_index=True)
