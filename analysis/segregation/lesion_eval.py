"""Per-image predictions of a network with a layer's top-ranked filters lesioned, fanned out with Ray and resumable.

Two ways to the same predictions:

- per unit (today's stage, `evaluate_with_ray` / `evaluate_in_process`): a unit of work is one (layer, lesioned
  task); the top fraction of that layer's filters in the task's ranking is lesioned and every task's full test set
  is classified by the definition (`sweeps.reference.reference_predictions`: a hook, one full forward pass per
  fraction; each batch is read once per unit and classified at every fraction);
- every analysis at once (`evaluate_analyses`): the evaluation engine (`sweeps.evaluation`) reads each test image
  once and answers every condition of every `Analysis` (the network's own tasks and any number of control
  partitions, each with its plan of lesions) from one pass of the intact network per batch. The tables are the
  same, row for row.

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
from collections.abc import Iterator, Mapping, Sequence
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
from data_pipeline.label_space import LabelSpace
from lightning_modules.heads import OutputHeads
from lightning_modules.vgg import VGG
from sweeps.devices import on_device
from sweeps.evaluation import INTACT, Answers, EvaluationSettings, Lesion, Readout, evaluate_lesions
from sweeps.reference import reference_predictions
from sweeps.stimuli import Batch, rebatch


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


def predictions_frame(
    unit: Unit,
    fraction: float,
    task: str,
    class_names: np.ndarray,
    labels: np.ndarray,
    overall: np.ndarray,
    within: np.ndarray,
) -> pd.DataFrame:
    """The per-image prediction rows of one unit, fraction and evaluated task (`class_names` names every label)."""
    return pd.DataFrame(
        {
            "layer": unit.layer,
            "lesioned_task": unit.task,
            "fraction": float(fraction),
            "eval_task": task,
            "image": np.arange(len(labels)),
            "class": class_names[labels],
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
        reference_predictions(model, eval_set.batches(batch_size), eval_set.outputs, lesions, heads)
        for eval_set in eval_sets
    ]
    return pd.concat(
        [
            predictions_frame(unit, fraction, eval_set.task, eval_set.class_names, *by_fraction[fraction])
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


@dataclass(frozen=True)
class Analysis:
    """One segregation analysis to evaluate: its tasks (a grouping of the model's classes: its own tasks, or a control
    partition) and, per unit, the filters lesioned at each fraction (`lesion_plan`)."""

    grouping: Mapping[str, np.ndarray]
    plan: Mapping[Unit, Mapping[float, Sequence[int]]]


def analysis_readouts(analyses: Sequence[Analysis]) -> list[Readout]:
    """What the engine reads out: one readout per analysis, unit and fraction, in that order."""
    return [
        Readout(INTACT if unit == INTACT_UNIT else Lesion.of(unit.layer, filters), number)
        for number, analysis in enumerate(analyses)
        for unit, by_fraction in analysis.plan.items()
        for filters in by_fraction.values()
    ]


def evaluate_analyses(
    model: VGG,
    sources: Sequence[ImageSource],
    analyses: Sequence[Analysis],
    label_space: LabelSpace,
    batch_size: int = DEFAULT_BATCH_SIZE,
    heads: OutputHeads = OutputHeads(),
    settings: EvaluationSettings = EvaluationSettings(),
) -> list[pd.DataFrame]:
    """Every analysis' predictions, each as `evaluate_in_process` gives them on the analysis' `eval_sets`, from one
    read of the test images: `sources` hold every real task's test images, in label-space order (read in batches of
    `batch_size`; the engine plans its own passes)."""
    batches = chain.from_iterable(source.batches(batch_size) for source in sources)
    groupings = [analysis.grouping for analysis in analyses]
    answers = evaluate_lesions(model, batches, analysis_readouts(analyses), groupings, heads, settings)
    return analysis_predictions(answers, analyses, class_names(label_space))


def analysis_predictions(answers: Answers, analyses: Sequence[Analysis], names: np.ndarray) -> list[pd.DataFrame]:
    """Each analysis' prediction rows from the engine's answers to `analysis_readouts(analyses)` on all test images:
    by unit, fraction and task of the analysis' grouping, that task's images in order (as its eval set streams them)."""
    frames, readout = [], 0
    for analysis in analyses:
        members = {task: np.isin(answers.labels, classes) for task, classes in analysis.grouping.items()}
        rows = []
        for unit, by_fraction in analysis.plan.items():
            for fraction in by_fraction:
                for task, keep in members.items():
                    overall = answers.prediction[readout, keep].astype(np.int64)
                    within = answers.within[readout, keep].astype(np.int64)
                    rows.append(predictions_frame(unit, fraction, task, names, answers.labels[keep], overall, within))
                readout += 1
        frames.append(pd.concat(rows, ignore_index=True))
    return frames


def class_names(label_space: LabelSpace) -> np.ndarray:
    """The name of every global label (class), in label order."""
    return np.asarray([name for classes in label_space.classes for name in classes], dtype=object)


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
