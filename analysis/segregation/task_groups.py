"""Which classes make up each task of the analysis: the network's own tasks, or random pseudo-tasks (the control).

A grouping maps a task name to global labels (indices into the model's output layer). The real grouping
is the model's LabelSpace. The random-task control (`--random-tasks`) shuffles all classes of all tasks with
a seed and deals them into pseudo-tasks with as many classes as the original tasks, in label-space order
(pseudo1 has as many classes as the first task, and so on). Images keep their global labels, and accuracy
over all outputs is unchanged; only which images and outputs count as one task changes.

The control needs filter rankings of its own: the sweep ranked filters for the real tasks only. One-shot rankings
come from the sweep's per-class table (`sweeps.class_totals`): a pseudo-task's loss with a filter lesioned is a sum
over its classes, exactly what a sweep of the same training images regrouped into the pseudo-tasks (`regroup`)
measures, so no second sweep runs. Greedy rankings need rounds of their own on the regrouped images.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

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


def random_grouping(label_space: LabelSpace, seed: int) -> Grouping:
    """All classes shuffled (seeded) and split into pseudo-tasks of the original tasks' sizes."""
    shuffled = np.random.default_rng(seed).permutation(label_space.total_classes)
    bounds = np.cumsum([label_space.num_classes(task) for task in label_space.tasks])[:-1]
    return {f"{PSEUDO_PREFIX}{i + 1}": np.sort(part) for i, part in enumerate(np.split(shuffled, bounds))}


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
