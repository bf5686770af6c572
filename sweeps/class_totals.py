"""Per-class lesion totals: for every lesioned filter, and for the intact network, the summed cross-entropy and the
number of correct top-1 answers over the sweep's images of each class.

The sweep records this filters x classes table (4,224 x 2,137 at paper scale: `class_losses.parquet` beside
`filter_losses.parquet`). A task's loss and accuracy are sums over its classes (`ClassTotals.task_losses`), so the
one-shot ranking of ANY grouping of the classes into tasks (the network's own tasks, random pseudo-tasks, the faces
merged into one task) comes from the table without another sweep, and equals a sweep of the images relabelled into
those tasks. The sweep's own per-task losses are derived the same way, so the two agree to the last bit.

Greedy ranking is the exception: its rounds after the first lesion every filter on top of those already chosen for
one task, so each grouping needs rounds of its own (`sweeps.distributed.greedy_rankings`); only its round 0 (the
one-shot losses) comes from the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lightning_modules.layer_names import CONV_LAYERS

Grouping = Mapping[str, Sequence[int]]  # task -> its classes, as labels in the model's output space
RESULT_COLUMNS = ("layer", "layer_index", "filter", "task", "loss", "accuracy", "intact_loss", "intact_accuracy")
CLASS_LOSS_COLUMNS = ("layer", "filter", "label", "loss_sum", "correct")  # class_losses.parquet
CLASS_INTACT_COLUMNS = ("label", "images", "loss_sum", "correct")  # class_intact.parquet


@dataclass(frozen=True)
class ClassTotals:
    """The per-class sums of a sweep: one row per lesion (layer, filter), one column per class (label)."""

    layers: np.ndarray  # (F,) the lesioned filter's layer
    filters: np.ndarray  # (F,) its index in the layer
    loss: np.ndarray  # (F, C) float64: summed cross-entropy over the class's images, with the filter lesioned
    correct: np.ndarray  # (F, C) int64: correct top-1 answers among them
    images: np.ndarray  # (C,) int64: the class's images in the sweep
    intact_loss: np.ndarray  # (C,) float64: the same sums for the intact network
    intact_correct: np.ndarray  # (C,) int64
    attrs: dict[str, Any] = field(default_factory=dict)  # how the sweep ran (memory budget, plans); not results
    units: tuple[str, ...] = CONV_LAYERS  # the network's lesion units in forward order (layer_index = position + 1)

    def task_losses(self, grouping: Grouping) -> pd.DataFrame:
        """One row per lesion and task of `grouping` (RESULT_COLUMNS): mean loss and top-1 accuracy over the task's
        images, lesioned and intact, each from the sums of the task's classes taken in label order."""
        loss, accuracy = task_means(self.loss, self.correct, self.images, grouping)
        intact_loss, intact_accuracy = task_means(
            self.intact_loss[None], self.intact_correct[None], self.images, grouping
        )
        tasks = len(grouping)
        return pd.DataFrame(
            {
                "layer": np.repeat(self.layers, tasks),
                "layer_index": np.repeat([self.units.index(layer) + 1 for layer in self.layers], tasks),
                "filter": np.repeat(self.filters, tasks),
                "task": np.tile(np.asarray(list(grouping), dtype=object), len(self.filters)),
                "loss": loss.ravel(),
                "accuracy": accuracy.ravel(),
                "intact_loss": np.tile(intact_loss[0], len(self.filters)),
                "intact_accuracy": np.tile(intact_accuracy[0], len(self.filters)),
            },
            columns=list(RESULT_COLUMNS),
        )

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The table as its two Parquet-ready frames: `class_loss_frame` and `class_intact_frame`."""
        return (
            class_loss_frame(self.layers, self.filters, self.loss, self.correct, self.units),
            class_intact_frame(self.images, self.intact_loss, self.intact_correct),
        )

    @classmethod
    def from_frames(
        cls, lesions: pd.DataFrame, intact: pd.DataFrame, units: tuple[str, ...] | None = None
    ) -> ClassTotals:
        """The table from its frames (`frames`, or chunks of them): lesion rows in order of first appearance.
        `units`: the network's units in forward order (default: the categories of a categorical `layer` column, as
        `class_loss_frame` writes it, else VGG16's conv layers).

        ValueError unless every lesion has exactly one row per label of `intact` (labels 0 .. C-1).
        """
        units = units or frame_units(lesions)
        classes = len(intact)
        if not np.array_equal(np.sort(intact["label"].to_numpy()), np.arange(classes)):
            raise ValueError("the intact per-class totals must hold each label 0 .. C-1 once")
        order = np.argsort(intact["label"].to_numpy())
        keys, firsts = lesion_keys(lesions, units)
        labels = lesions["label"].to_numpy().astype(np.int64)
        if len(lesions) != len(firsts) * classes or labels.min(initial=0) < 0 or labels.max(initial=0) >= classes:
            raise ValueError(f"per-class totals need one row per lesion and label (0 .. {classes - 1})")
        cells = keys * classes + labels
        if (np.bincount(cells, minlength=len(firsts) * classes) != 1).any():
            raise ValueError(f"per-class totals need one row per lesion and label (0 .. {classes - 1})")
        loss = np.zeros((len(firsts), classes))
        correct = np.zeros((len(firsts), classes), dtype=np.int64)
        loss[keys, labels] = lesions["loss_sum"].to_numpy()
        correct[keys, labels] = lesions["correct"].to_numpy()
        return cls(
            layers=np.asarray(lesions["layer"].to_numpy()[firsts], dtype=object),
            filters=lesions["filter"].to_numpy()[firsts].astype(np.int64),
            loss=loss,
            correct=correct,
            images=intact["images"].to_numpy()[order].astype(np.int64),
            intact_loss=intact["loss_sum"].to_numpy()[order].astype(np.float64),
            intact_correct=intact["correct"].to_numpy()[order].astype(np.int64),
            units=tuple(units),
        )


def frame_units(lesions: pd.DataFrame) -> tuple[str, ...]:
    """The units a `class_loss_frame` names: its layer column's categories, or VGG16's conv layers."""
    layers = lesions["layer"]
    return tuple(layers.cat.categories) if isinstance(layers.dtype, pd.CategoricalDtype) else CONV_LAYERS


def lesion_keys(lesions: pd.DataFrame, units: Sequence[str] = CONV_LAYERS) -> tuple[np.ndarray, np.ndarray]:
    """Each row's lesion number (lesions numbered in order of first appearance) and each lesion's first row."""
    codes = pd.Categorical(lesions["layer"], categories=list(units)).codes.astype(np.int64)
    if (codes < 0).any():
        raise ValueError(f"per-class totals of unknown layers; the network's units are {', '.join(units)}")
    filters = lesions["filter"].to_numpy().astype(np.int64)
    combined = codes * (filters.max(initial=0) + 1) + filters
    _, firsts, inverse = np.unique(combined, return_index=True, return_inverse=True)
    appearance = np.argsort(firsts)
    number = np.empty_like(appearance)
    number[appearance] = np.arange(len(appearance))
    return number[inverse.ravel()], firsts[appearance]


def class_loss_frame(
    layers: np.ndarray,
    filters: np.ndarray,
    loss: np.ndarray,
    correct: np.ndarray,
    units: Sequence[str] = CONV_LAYERS,
) -> pd.DataFrame:
    """Rows (layer, filter, label, loss_sum, correct) of lesions (`layers`, `filters`, (F,)) and their per-class sums
    (F, C): every label 0 .. C-1 of every lesion, float64 sums and int32 counts; `layer` is categorical over the
    network's `units` in forward order."""
    rows, classes = loss.shape
    units = list(units)
    codes = np.asarray([units.index(layer) for layer in layers], dtype=np.int16)
    return pd.DataFrame(
        {
            "layer": pd.Categorical.from_codes(np.repeat(codes, classes), categories=units),
            "filter": np.repeat(filters, classes).astype(np.int32),
            "label": np.tile(np.arange(classes, dtype=np.int32), rows),
            "loss_sum": loss.ravel(),
            "correct": correct.ravel().astype(np.int32),
        },
        columns=list(CLASS_LOSS_COLUMNS),
    )


def class_intact_frame(images: np.ndarray, loss: np.ndarray, correct: np.ndarray) -> pd.DataFrame:
    """Rows (label, images, loss_sum, correct) of the intact network: every label 0 .. C-1."""
    return pd.DataFrame(
        {
            "label": np.arange(len(images), dtype=np.int32),
            "images": images.astype(np.int32),
            "loss_sum": loss,
            "correct": correct.astype(np.int32),
        },
        columns=list(CLASS_INTACT_COLUMNS),
    )


def task_means(
    loss: np.ndarray, correct: np.ndarray, images: np.ndarray, grouping: Grouping
) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss and accuracy per row and task, (rows, tasks), from per-class sums (rows, classes): each task's
    classes summed in label order (so any listing of them gives the same numbers), over its image count."""
    losses, accuracies = [], []
    for task, labels in grouping.items():
        columns = np.unique(np.asarray(labels, dtype=np.int64))
        count = images[columns].sum()
        if count == 0:
            raise ValueError(f"task {task!r} has no images among the sweep's; its classes are {columns.tolist()}")
        losses.append(loss[:, columns].sum(axis=1) / count)
        accuracies.append(correct[:, columns].sum(axis=1) / count)
    return np.stack(losses, axis=1), np.stack(accuracies, axis=1)
