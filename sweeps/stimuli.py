"""The images of a lesion sweep: every task's images in one tensor, with labels and task ids, shareable through Ray.

The images are either float (already normalised: tests, known-answer networks) or uint8 crops as stored (the
sweep of a checkpoint): uint8 travels through Ray's object store at a quarter of the size (at paper scale,
12,800 images of 224 px: 1.9 GB per node instead of 7.7 GB) and is normalised batch by batch where it is used,
bit for bit as the loader would have (`data_pipeline.normalise`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from data_pipeline.normalise import normalise_uint8

ImagesByTask = Mapping[str, tuple[torch.Tensor, torch.Tensor]]
Batch = tuple[torch.Tensor, torch.Tensor]  # images (N, 3, H, W) and labels in the model's output space (N,)


@dataclass(frozen=True)
class Stimuli:
    """All tasks' images in one tensor (uint8 as stored, or float normalised), with each image's label and task
    index."""

    images: torch.Tensor
    labels: torch.Tensor
    task_ids: torch.Tensor
    tasks: tuple[str, ...]

    @classmethod
    def from_tasks(cls, images_by_task: ImagesByTask) -> Stimuli:
        """Concatenate the (images, labels) of each task, in mapping order; images all uint8 or all float."""
        if not images_by_task:
            raise ValueError("images_by_task is empty: give at least one task's (images, labels)")
        if len({task_images.dtype == torch.uint8 for task_images, _ in images_by_task.values()}) > 1:
            raise ValueError(
                "some tasks' images are uint8 and some float; give all as stored (uint8) or all normalised"
            )
        images, labels, task_ids = [], [], []
        for index, (task, (task_images, task_labels)) in enumerate(images_by_task.items()):
            if len(task_images) != len(task_labels) or len(task_images) == 0:
                raise ValueError(f"task {task!r}: need as many labels as images, and at least one image")
            images.append(task_images if task_images.dtype == torch.uint8 else task_images.float())
            labels.append(task_labels.long())
            task_ids.append(torch.full((len(task_labels),), index, dtype=torch.long))
        return cls(torch.cat(images), torch.cat(labels), torch.cat(task_ids), tuple(images_by_task))

    def batches(
        self, batch_size: int, device: torch.device
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(images as normalised float, labels, task ids) in consecutive batches, on `device`."""
        for start in range(0, len(self.labels), batch_size):
            stop = start + batch_size
            yield (
                network_input(self.images[start:stop].to(device)),
                self.labels[start:stop].to(device),
                self.task_ids[start:stop].to(device),
            )

    def only(self, task: str) -> Stimuli:
        """The images of one task alone (views: tasks are stored one after another)."""
        index = self.tasks.index(task)
        counts = self.counts()
        rows = slice(int(counts[:index].sum()), int(counts[: index + 1].sum()))
        return Stimuli(self.images[rows], self.labels[rows], torch.zeros(int(counts[index]), dtype=torch.long), (task,))

    def counts(self) -> np.ndarray:
        """Number of images of each task."""
        return np.bincount(self.task_ids.numpy(), minlength=len(self.tasks))

    def grouping(self) -> dict[str, np.ndarray]:
        """The classes (labels) of each task's images; ValueError when a class belongs to two tasks."""
        labels, task_ids = self.labels.numpy(), self.task_ids.numpy()
        grouping = {task: np.unique(labels[task_ids == index]) for index, task in enumerate(self.tasks)}
        if sum(map(len, grouping.values())) != len(np.unique(labels)):
            raise ValueError("a class has images in two tasks; give each class's images to one task")
        return grouping

    def __reduce__(self):
        """Pickle the images as a numpy array: Ray's object store then shares them between the workers of a node
        (zero-copy, read-only) instead of copying them into every task, as it does with a torch tensor."""
        return _stimuli_from_numpy, (self.images.numpy(), self.labels, self.task_ids, self.tasks)


def network_input(images: torch.Tensor) -> torch.Tensor:
    """Images as the network takes them: uint8 crops normalised as the loader would (bit for bit), float as given."""
    return normalise_uint8(images) if images.dtype == torch.uint8 else images.float()


def _stimuli_from_numpy(
    images: np.ndarray, labels: torch.Tensor, task_ids: torch.Tensor, tasks: tuple[str, ...]
) -> Stimuli:
    """Unpickle `Stimuli`; the images stay in the (possibly read-only, shared) numpy buffer, which is only read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return Stimuli(torch.from_numpy(images), labels, task_ids, tasks)


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
