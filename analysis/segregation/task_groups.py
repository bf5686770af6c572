"""Which classes make up each task of the analysis: the network's own tasks, or random pseudo-tasks (the control).

A grouping maps a task name to global labels (indices into the model's output layer). The real grouping
is the model's LabelSpace. Random partitions of the classes into pseudo-tasks
(the random-task control, and the partitions of the permutation null, `analysis.segregation.null`) shuffle all
classes of all tasks with a seed and deal them out by one of two schemes (PARTITION_SCHEMES):

- "sizes": pseudo-tasks with as many classes as the original tasks, in label-space order (pseudo1 has as many
  classes as the first task, and so on): the null then differs from the network's tasks only in which classes go
  together, not in how many (the default);
- "halves": all classes pooled and split into equal parts, one per task (two halves for a pair; with an odd count the
  last part is one larger), as the authors' code split them.

Images keep their global labels, and accuracy over all outputs is unchanged; only which images and outputs count as
one task changes.

The control needs filter rankings of its own: the sweep ranked filters for the real tasks only. One-shot rankings
come from the sweep's per-class table (`sweeps.class_totals`): a pseudo-task's loss with a filter lesioned is a sum
over its classes, exactly what a sweep of the same training images regrouped into the pseudo-tasks (`regroup`)
measures, so no second sweep runs. Greedy rankings need rounds of their own on the regrouped images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from analysis.segregation.settings import PARTITION_SCHEMES
from data_pipeline.label_space import LabelSpace

Grouping = dict[str, np.ndarray]  # task -> global labels of its classes
ImagesByTask = Mapping[str, tuple[torch.Tensor, torch.Tensor]]
PSEUDO_PREFIX = "pseudo"


def label_space_grouping(label_space: LabelSpace) -> Grouping:
    """The model's own tasks and their global labels."""
    return {
        task: np.arange(label_space.offset(task), label_space.offset(task) + label_space.num_classes(task))
        for task in label_space.tasks
    }


def random_grouping(label_space: LabelSpace, seed: int | Sequence[int], scheme: str = "sizes") -> Grouping:
    """All classes shuffled (seeded: an integer, or several such as (network seed, partition index)) and split into
    pseudo-tasks by `scheme` (PARTITION_SCHEMES): the original tasks' sizes, or equal parts."""
    total, tasks = label_space.total_classes, len(label_space.tasks)
    shuffled = np.random.default_rng(seed).permutation(total)
    if scheme == "sizes":
        sizes = [label_space.num_classes(task) for task in label_space.tasks]
    elif scheme == "halves":
        sizes = [total // tasks] * (tasks - 1) + [total - (tasks - 1) * (total // tasks)]
    else:
        raise ValueError(f"unknown partition scheme {scheme!r}; choose one of {', '.join(PARTITION_SCHEMES)}")
    bounds = np.cumsum(sizes)[:-1]
    return {f"{PSEUDO_PREFIX}{i + 1}": np.sort(part) for i, part in enumerate(np.split(shuffled, bounds))}


def null_partitions(label_space: LabelSpace, count: int, network_seed: int, scheme: str = "sizes") -> list[Grouping]:
    """The `count` random partitions of a network's permutation null: partition i (1, 2, ...) seeded by
    (network_seed, i), so each network seed draws partitions of its own and partition 1 is the random-task control."""
    return [random_grouping(label_space, (network_seed, index), scheme) for index in range(1, count + 1)]


def regroup(images_by_task: ImagesByTask, grouping: Grouping) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The images (with global labels) of all given tasks, dealt into the grouping's tasks by label."""
    images = torch.cat([pair[0] for pair in images_by_task.values()])
    labels = torch.cat([pair[1] for pair in images_by_task.values()])
    regrouped = {}
    for task, members in grouping.items():
        keep = torch.from_numpy(np.isin(labels.numpy(), members))
        regrouped[task] = (images[keep], labels[keep])
    return regrouped


def grouping_table(grouping: Grouping, label_space: LabelSpace) -> pd.DataFrame:
    """One row per class: analysis task, global label, original task and class name."""
    origin = label_space.task_of(torch.arange(label_space.total_classes)).numpy()
    names = [name for classes in label_space.classes for name in classes]
    return pd.DataFrame(
        [
            {
                "task": task,
                "label": int(label),
                "original_task": label_space.tasks[origin[label]],
                "class": names[label],
            }
            for task, members in grouping.items()
            for label in members
        ]
    )
