"""Reading a data directory written by `specialize data build`: tasks, classes, .beton paths and label layouts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from data_pipeline.tasks import TaskLayout
from specialize.errors import UserError
from specialize.io import read_json


class DataDir:
    """A built data directory: DIR/manifest.json, DIR/<task>/{train,test,heldout}.beton, DIR/pool_<a>+<b>/{train,test}.beton."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.is_file():
            raise UserError(f"{self.path} is not a built data directory (no manifest.json); "
                            "create one with `specialize data build` or `specialize data synth` + `data build`")
        self.manifest = read_json(manifest_path)
        if "tasks" not in self.manifest or "pools" not in self.manifest:
            raise UserError(f"{manifest_path} is not a data manifest; point to the --out folder of `specialize data build`")

    @property
    def task_names(self) -> list[str]:
        """Tasks in the order they were built."""
        return list(self.manifest["tasks"])

    def _task(self, task: str) -> dict:
        try:
            return self.manifest["tasks"][task]
        except KeyError:
            raise UserError(f"task {task!r} is not in {self.path} (it has {', '.join(self.task_names)}); "
                            "choose one of those or rebuild with --task") from None

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
        """Path of DIR/<task>/<split>.beton (split: train, test or heldout)."""
        files = self._task(task)["files"]
        if split not in files:
            raise UserError(f"task {task} in {self.path} has no {split} split (it has {', '.join(files)}); "
                            "rebuild with --heldout-classes for held-out data")
        return self._existing(files[split])

    def pool_beton(self, tasks: Sequence[str], split: str) -> Path:
        """Path of the pooled .beton of several tasks (global labels in `layout(tasks)`), split train or test."""
        name = "+".join(tasks)
        pool = self.manifest["pools"].get(name)
        if pool is None:
            raise UserError(f"{self.path} has no pool {name} (it has {', '.join(self.manifest['pools']) or 'none'}); "
                            f"rebuild with --pool {name}")
        if split not in pool["files"]:
            raise UserError(f"pool {name} has no {split} split; pools hold train and test")
        return self._existing(pool["files"][split])

    def layout(self, tasks: Sequence[str]) -> TaskLayout:
        """The global label space of these tasks in this order."""
        return TaskLayout.from_classes({task: self.classes(task) for task in tasks})

    def _existing(self, relative: str) -> Path:
        path = self.path / relative
        if not path.is_file():
            raise UserError(f"{path} is missing; rebuild the data directory with `specialize data build`")
        return path
