"""Per-image predictions of networks with a layer's top-ranked filters lesioned: every condition from one read of
the test set, fanned out over Ray by slices of the test images, resumable.

An `Analysis` is a grouping of the classes into tasks (the network's own tasks, or a control partition) with its
plan: per unit (the intact network, or a layer and the task whose top filters are lesioned) the filters lesioned at
each fraction (`lesion_plan`). The evaluation engine (`sweeps.evaluation.evaluate_lesions`) answers every readout of
every analysis (all layers, lesioned tasks, fractions, and each analysis' own tasks) on a batch of test images from
one pass of the intact network, and `analysis_predictions` deals the answers into each analysis' prediction table:
rows by unit, fraction and task of the grouping, that task's images in order (numbered within the task). The table
is the one the definition gives (`analysis.segregation.reference`: one full forward pass per condition), row for row.

The test images are every real task's test .beton, read in file order with the eval transform (`BetonSource`), in
label-space order. `evaluate_with_ray` cuts them into slices of at most `images_per_unit` images within one file
(`image_slices`): a unit of work is one slice with all its conditions, so work spreads evenly over any number of
workers and each image is read and decoded once in the whole run. Each finished unit's answers are written
atomically to `<out>/units/<task>_<first image>.parquet`; a rerun skips the units already there, and Ray retries a
unit whose worker died. The slices depend only on the test set and `images_per_unit`, so the tables do not depend on
the number of workers. Memory is bounded by the engine's plan and the read batch, whatever the test-set size; only
the answers (8 bytes per readout and image) are kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import chain
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from analysis.segregation.indices import INTACT_LAYER, NO_TASK, PREDICTION_COLUMNS
from analysis.segregation.settings import DEFAULT_BATCH_SIZE, DEFAULT_IMAGES_PER_UNIT
from common.ray_runner import Resources, WorkUnit, run_units
from data_pipeline.label_space import LabelSpace
from lightning_modules.heads import OutputHeads
from sweeps.class_totals import Grouping
from sweeps.evaluation import INTACT, Answers, EvaluationSettings, Lesion, Readout, evaluate_lesions
from sweeps.ranking import top_filters
from sweeps.stimuli import Batch


class ImageSource(Protocol):
    """Images with global labels, in a fixed order, as batches."""

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """The images in order, in batches of at most `batch_size`."""


@dataclass(frozen=True)
class BetonSource:
    """One real task's split in a .beton, read in file order with the eval transform, labels shifted by
    `label_offset`: its images `start` to `stop` (default: all)."""

    path: str
    label_offset: int
    resolution: int
    num_workers: int | None = None
    start: int = 0
    stop: int | None = None

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """The images in file order, one copied batch at a time."""
        from data_pipeline.sample import stream_batches

        indices = None if self.start == 0 and self.stop is None else range(self.start, self.length())
        return stream_batches(
            self.path, self.resolution, batch_size, self.label_offset, indices=indices, num_workers=self.num_workers
        )

    def length(self) -> int:
        """One past the last image read: `stop`, or the file's image count."""
        from data_pipeline.sample import num_samples

        return self.stop if self.stop is not None else num_samples(self.path)

    def slices(self, size: int) -> list[BetonSource]:
        """The file's images in consecutive slices of at most `size`."""
        end = self.length()
        return [replace(self, start=first, stop=min(first + size, end)) for first in range(self.start, end, size)]


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
class Unit:
    """What one condition lesions: a layer's top filters for a task (or nothing: the intact network)."""

    layer: str
    task: str


INTACT_UNIT = Unit(INTACT_LAYER, NO_TASK)


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
    model: nn.Module,
    sources: Sequence[ImageSource],
    analyses: Sequence[Analysis],
    label_space: LabelSpace,
    batch_size: int = DEFAULT_BATCH_SIZE,
    heads: OutputHeads = OutputHeads(),
    settings: EvaluationSettings = EvaluationSettings(),
) -> list[pd.DataFrame]:
    """Every analysis' prediction table, in this process (no Ray, nothing written: tests, benchmarks, small jobs),
    from one read of the test images: `sources` hold every real task's test images, in label-space order (read in
    batches of `batch_size`; the engine plans its own passes)."""
    batches = chain.from_iterable(source.batches(batch_size) for source in sources)
    groupings = [analysis.grouping for analysis in analyses]
    answers = evaluate_lesions(model, batches, analysis_readouts(analyses), groupings, heads, settings)
    return analysis_predictions(answers, analyses, class_names(label_space))


def analysis_predictions(answers: Answers, analyses: Sequence[Analysis], names: np.ndarray) -> list[pd.DataFrame]:
    """Each analysis' prediction rows from the engine's answers to `analysis_readouts(analyses)` on all test images:
    by unit, fraction and task of the analysis' grouping, that task's images in order."""
    return list(iter_analysis_predictions(answers, analyses, names))


def iter_analysis_predictions(
    answers: Answers, analyses: Sequence[Analysis], names: np.ndarray
) -> Iterator[pd.DataFrame]:
    """`analysis_predictions` one analysis at a time, so that many analyses (the partitions of a null) need the
    memory of one table at once."""
    readout = 0
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
        yield pd.concat(rows, ignore_index=True)


def class_names(label_space: LabelSpace) -> np.ndarray:
    """The name of every global label (class), in label order."""
    return np.asarray([name for classes in label_space.classes for name in classes], dtype=object)


def image_slices(
    sources: Mapping[str, BetonSource], images_per_unit: int = DEFAULT_IMAGES_PER_UNIT
) -> dict[str, BetonSource]:
    """The units of work: each real task's test images (`sources`, in label-space order) in slices of at most
    `images_per_unit`, keyed by their file name stem `<task>_<first image>`, in order."""
    return {
        f"{task}_{part.start:08d}": part for task, source in sources.items() for part in source.slices(images_per_unit)
    }


def answer_slice(
    model: nn.Module,
    source: ImageSource,
    readouts: Sequence[Readout],
    groupings: Sequence[Grouping],
    heads: OutputHeads,
    settings: EvaluationSettings,
    batch_size: int,
) -> pd.DataFrame:
    """A Ray task: the answers of every readout on one slice of the test images (`Answers.frame`), on the GPU Ray
    assigned to it, or the CPU."""
    from common.ray_runner import worker_device

    batches = source.batches(batch_size)
    return evaluate_lesions(model, batches, readouts, groupings, heads, settings, worker_device()).frame()


def evaluate_with_ray(
    model: nn.Module,
    slices: Mapping[str, ImageSource],
    analyses: Sequence[Analysis],
    label_space: LabelSpace,
    units_dir: Path,
    resources: Resources = Resources(),
    batch_size: int = DEFAULT_BATCH_SIZE,
    heads: OutputHeads = OutputHeads(),
    settings: EvaluationSettings = EvaluationSettings(),
) -> list[pd.DataFrame]:
    """Every analysis' prediction table (as `evaluate_analyses`): the slices of the test images (`image_slices`, in
    order) not yet answered in `units_dir` as Ray tasks, each written as it finishes, then all joined in order.

    Needs a Ray session (`common.ray_runner.ray_session`).
    """
    answers = answer_with_ray(model, slices, analyses, units_dir, resources, batch_size, heads, settings)
    return analysis_predictions(answers, analyses, class_names(label_space))


def answer_with_ray(
    model: nn.Module,
    slices: Mapping[str, ImageSource],
    analyses: Sequence[Analysis],
    units_dir: Path,
    resources: Resources = Resources(),
    batch_size: int = DEFAULT_BATCH_SIZE,
    heads: OutputHeads = OutputHeads(),
    settings: EvaluationSettings = EvaluationSettings(),
) -> Answers:
    """The engine's answers to `analysis_readouts(analyses)` on every slice (`evaluate_with_ray` without the
    prediction tables: `iter_analysis_predictions` deals them out one analysis at a time)."""
    import ray

    readouts = analysis_readouts(analyses)
    groupings = [dict(analysis.grouping) for analysis in analyses]
    model_ref = ray.put(model)
    units = [
        WorkUnit(units_dir / f"{name}.parquet", (model_ref, source, readouts, groupings, heads, settings, batch_size))
        for name, source in slices.items()
    ]
    run_units(answer_slice, units, resources, "lesioned evaluations", unit_name="slice")
    return Answers.concat([Answers.from_frame(pd.read_parquet(unit.path), len(readouts)) for unit in units])
