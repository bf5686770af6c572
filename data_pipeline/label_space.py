"""The label space shared by data and models: which tasks, their classes, and where each task's outputs sit.

Tasks are data, not code: a label space holds any number of tasks, in order; task i's classes occupy the
output indices [offset(i), offset(i) + num_classes(i)), face classes first in the paper's face+object model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: building data and parsing commands need none of it
    import torch


@dataclass(frozen=True)
class LabelSpace:
    """Ordered tasks and their class names, concatenated into one global label space."""

    tasks: tuple[str, ...]
    classes: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if len(self.tasks) != len(self.classes):
            raise ValueError("LabelSpace needs one class list per task")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"LabelSpace has a repeated task: {self.tasks}")

    @classmethod
    def from_classes(cls, classes_by_task: Mapping[str, Sequence[str]]) -> LabelSpace:
        """Build from an ordered mapping task -> class names."""
        return cls(tuple(classes_by_task), tuple(tuple(c) for c in classes_by_task.values()))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelSpace:
        """Inverse of `to_dict`."""
        return cls.from_classes({task["name"]: task["classes"] for task in data["tasks"]})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description: tasks in order with their classes and offsets."""
        return {
            "tasks": [
                {"name": name, "offset": self.offset(name), "classes": list(classes)}
                for name, classes in zip(self.tasks, self.classes)
            ]
        }

    def index(self, task: str) -> int:
        """Position of `task` in the label space."""
        try:
            return self.tasks.index(task)
        except ValueError:
            raise KeyError(f"task {task!r} is not in this label space ({', '.join(self.tasks)})") from None

    def num_classes(self, task: str) -> int:
        """Number of classes of one task."""
        return len(self.classes[self.index(task)])

    def offset(self, task: str) -> int:
        """First global label of `task`."""
        return sum(len(c) for c in self.classes[: self.index(task)])

    def output_slice(self, task: str) -> slice:
        """The slice of the output layer that holds `task`'s classes."""
        start = self.offset(task)
        return slice(start, start + self.num_classes(task))

    @property
    def total_classes(self) -> int:
        """Size of the global label space (the output layer)."""
        return sum(len(c) for c in self.classes)

    def task_of(self, labels: torch.Tensor) -> torch.Tensor:
        """Task index (position in `tasks`) of each global label."""
        import torch

        bounds = torch.tensor([self.offset(t) + self.num_classes(t) for t in self.tasks], device=labels.device)
        return torch.bucketize(labels, bounds, right=True)
