"""The definition of the segregation analysis' prediction table, to which the evaluation engine's tables are held
(tests, `benchmarks/bench_segregation.py`); the stage itself computes them with `analysis.segregation.lesion_eval`.

For each unit (the intact network, or a layer and the task whose top filters are lesioned) and fraction, a hook
zeroes the filters and every analysed task's test set is classified with one full forward pass per batch
(`sweeps.reference.reference_predictions`), nothing shared between conditions. A task's test set (`EvalSet`) is
streamed from the real tasks' test sources it draws on, keeping the images of its classes in source order (a
pseudo-task of a control partition draws on several real tasks' files), in batches of exactly `batch_size`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import pandas as pd
import torch
from torch import nn

from analysis.segregation.lesion_eval import INTACT_UNIT, ImageSource, Unit, class_names, predictions_frame
from analysis.segregation.settings import DEFAULT_BATCH_SIZE
from data_pipeline.label_space import LabelSpace
from lightning_modules.heads import OutputHeads
from sweeps.reference import reference_predictions
from sweeps.stimuli import Batch, rebatch


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


def eval_sets(
    sources: Mapping[str, ImageSource], grouping: Mapping[str, np.ndarray], label_space: LabelSpace
) -> list[EvalSet]:
    """Test sets of the grouping's tasks, from each real task's test images (`sources`, keyed by the label_space's
    tasks): a task's set draws on the real tasks holding any of its classes, in label-space order, and keeps the
    images of its classes."""
    names = class_names(label_space)
    origin = label_space.task_of(torch.arange(label_space.total_classes)).numpy()
    return [
        EvalSet(
            task,
            tuple(sources[real] for index, real in enumerate(label_space.tasks) if index in origin[members]),
            torch.from_numpy(np.asarray(members)).long(),
            names,
        )
        for task, members in grouping.items()
    ]


def reference_unit(
    model: nn.Module,
    sets: Sequence[EvalSet],
    unit: Unit,
    filters_by_fraction: Mapping[float, Sequence[int]],
    batch_size: int = DEFAULT_BATCH_SIZE,
    heads: OutputHeads = OutputHeads(),
) -> pd.DataFrame:
    """Predictions on every evaluated task with the unit's filters lesioned at each fraction; rows by fraction, then
    task, then image."""
    model.eval()
    lesions = {
        fraction: ({unit.layer: filters} if unit != INTACT_UNIT else {})
        for fraction, filters in filters_by_fraction.items()
    }
    predicted = [
        reference_predictions(model, eval_set.batches(batch_size), eval_set.outputs, lesions, heads)
        for eval_set in sets
    ]
    return pd.concat(
        [
            predictions_frame(unit, fraction, eval_set.task, eval_set.class_names, *by_fraction[fraction])
            for fraction in lesions
            for eval_set, by_fraction in zip(sets, predicted)
        ],
        ignore_index=True,
    )


def reference_analysis(
    model: nn.Module,
    sets: Sequence[EvalSet],
    plan: Mapping[Unit, Mapping[float, Sequence[int]]],
    batch_size: int = DEFAULT_BATCH_SIZE,
    heads: OutputHeads = OutputHeads(),
) -> pd.DataFrame:
    """The prediction table of one analysis (`lesion_eval.Analysis`: the tasks of `sets`, the `plan`), unit by unit."""
    return pd.concat(
        [reference_unit(model, sets, unit, filters, batch_size, heads) for unit, filters in plan.items()],
        ignore_index=True,
    )
