"""Reading a data directory written by `specialize data build`: tasks, classes, .beton paths and label layouts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from common.errors import UserError
from common.io import read_json
from data_pipeline.label_space import LabelSpace

REBUILD_FOR_VALIDATION = (
    "was built before validation images were set aside (training then watched the test split); "
    "rebuild it with `specialize data build` into a new --out (--val-per-class sets their number)"
)


class DataDir:
    """A built data directory: DIR/manifest.json, DIR/<task>/{train,val,test,heldout}.beton,
    DIR/pool_<a>+<b>/{train,val,test}.beton."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.is_file():
            raise UserError(
                f"{self.path} is not a built data directory (no manifest.json); "
                "create one with `specialize data build` or `specialize data synth` + `data build`"
            )
        self.manifest = read_json(manifest_path)
        if "tasks" not in self.manifest or "pools" not in self.manifest:
            raise UserError(
                f"{manifest_path} is not a data manifest; point to the --out folder of `specialize data build`"
            )

    @property
    def task_names(self) -> list[str]:
        """Tasks in the order they were built."""
        return list(self.manifest["tasks"])

    def _task(self, task: str) -> dict:
        try:
            return self.manifest["tasks"][task]
        except KeyError:
            raise UserError(
                f"task {task!r} is not in {self.path} (it has {', '.join(self.task_names)}); "
                "choose one of those or rebuild with --task"
            ) from None

    def classes(self, task: str) -> list[str]:
        """Training classes of a task; a class's index is its local label."""
        return list(self._task(task)["classes"])

    def heldout_classes(self, task: str) -> list[str]:
        """Held-out classes of a task (labels 0..H-1 in its heldout.beton)."""
        return list(self._task(task)["heldout_classes"])

    def counts(self, task: str) -> dict:
        """Image counts of a task per split (and per class)."""
        return dict(self._task(task)["counts"])

    def beton(self, task: str, split: str) -> Path:
        """Path of DIR/<task>/<split>.beton (split: train, val, test or heldout)."""
        files = self._task(task)["files"]
        if split == "val" and split not in files:
            raise UserError(f"{self.path} {REBUILD_FOR_VALIDATION}")
        if split not in files:
            raise UserError(
                f"task {task} in {self.path} has no {split} split (it has {', '.join(files)}); "
                "rebuild with --heldout-classes for held-out data"
            )
        return self._existing(files[split])

    def pool_beton(self, tasks: Sequence[str], split: str) -> Path:
        """Path of the pooled .beton of several tasks (global labels in `label_space(tasks)`), split train, val or
        test."""
        name = "+".join(tasks)
        pool = self.manifest["pools"].get(name)
        if pool is None:
            raise UserError(
                f"{self.path} has no pool {name} (it has {', '.join(self.manifest['pools']) or 'none'}); "
                f"rebuild with --pool {name}"
            )
        if split == "val" and split not in pool["files"]:
            raise UserError(f"{self.path} {REBUILD_FOR_VALIDATION}")
        if split not in pool["files"]:
            raise UserError(f"pool {name} has no {split} split; pools hold {', '.join(pool['files'])}")
        return self._existing(pool["files"][split])

    def tasks_beton(self, tasks: Sequence[str], split: str) -> Path:
        """The .beton that holds `tasks` together for a split: one task's own file, or the pool of several."""
        return self.beton(tasks[0], split) if len(tasks) == 1 else self.pool_beton(tasks, split)

    def label_space(self, tasks: Sequence[str]) -> LabelSpace:
        """The global label space of these tasks in this order; UserError names a task the directory lacks."""
        unknown = [task for task in tasks if task not in self.task_names]
        if unknown:
            raise UserError(f"unknown task {unknown[0]!r}; the data in {self.path} has: {', '.join(self.task_names)}")
        return LabelSpace.from_classes({task: self.classes(task) for task in tasks})

    def check_serves(self, label_space: LabelSpace) -> None:
        """UserError unless this directory holds every task of a model's label space with the same classes."""
        for task, classes in zip(label_space.tasks, label_space.classes):
            if task not in self.task_names:
                raise UserError(
                    f"data {self.path} lacks task {task!r}, which the model was trained on "
                    f"(it has {', '.join(self.task_names)}); pass the data directory the model was trained on"
                )
            if tuple(self.classes(task)) != tuple(classes):
                raise UserError(
                    f"task {task!r} in {self.path} has other classes than the model was trained on; "
                    "pass the data directory the model was trained on"
                )

    def check_labels(self, tasks: Sequence[str], split: str) -> None:
        """UserError unless the labels in `tasks`' .beton of `split` are exactly the classes of their label space."""
        from ffcv.reader import Reader

        beton = self.tasks_beton(tasks, split)
        num_classes = self.label_space(tasks).total_classes
        reader = Reader(str(beton))
        labels = set(int(label) for label in reader.metadata[f"f{reader.field_names.index('label')}"])
        if labels != set(range(num_classes)):
            present = f"{len(labels)} distinct labels in [{min(labels, default=0)}, {max(labels, default=0)}]"
            raise UserError(
                f"{beton} holds {present} but the manifest lists {num_classes} classes; "
                "rebuild the data with `specialize data build`"
            )

    def _existing(self, relative: str) -> Path:
        path = self.path / relative
        if not path.is_file():
            raise UserError(f"{path} is missing; rebuild the data directory with `specialize data build`")
        return path
