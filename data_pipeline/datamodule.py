"""The LightningDataModule for training: FFCV loaders built inside the dataloader hooks (after DDP set-up)."""

from __future__ import annotations

import os

import pytorch_lightning as pl
import torch
import torch.distributed as dist

from common.errors import UserError
from data_pipeline.data_dir import DataDir
from data_pipeline.loaders import make_loader


def distributed_world() -> bool:
    """Whether a torch.distributed process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class TaskDataModule(pl.LightningDataModule):
    """Train and validation loaders for one task (DIR/<task>) or several (their pool). Validation reads the val split
    (images set aside from each class's training images); the test split is left to the analyses.

    Labels are global in `self.label_space` (tasks in the order given); with one task they equal its local labels.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        tasks: list[str],
        batch_size: int,
        resolution: int,
        num_workers: int,
        seed: int = 0,
        os_cache: bool = True,
        augment: bool = True,
    ):
        super().__init__()
        if not tasks:
            raise UserError("no tasks given; name one task or several (a pool) of the data directory")
        self.data = DataDir(data_dir)
        self.tasks = list(tasks)
        self.label_space = self.data.label_space(self.tasks)
        self.batch_size, self.resolution, self.num_workers = batch_size, resolution, num_workers
        self.seed, self.os_cache = seed, os_cache
        self.augment = augment  # False: train on the eval transform in file order (deterministic input, for checks)

    def beton(self, split: str) -> os.PathLike:
        """The .beton this module reads for a split: the task's own, or the pool of all its tasks."""
        return self.data.tasks_beton(self.tasks, split)

    def _device(self) -> torch.device:
        """Where batches should land: the trainer's GPU when training on one, else CPU."""
        trainer = getattr(self, "trainer", None)
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        return device if device.type == "cuda" else torch.device("cpu")

    def _trainer_epoch(self) -> int:
        """The epoch whose batches come next: Lightning's count of processed epochs (what it hands a sampler's
        set_epoch). Not `current_epoch`: a resumed run starts loading before that counter reaches the epoch it runs."""
        return self.trainer.fit_loop.epoch_progress.current.processed

    def _loader(self, split: str, train: bool):
        trainer = getattr(self, "trainer", None)
        return make_loader(
            self.beton(split),
            train=train,
            batch_size=self.batch_size,
            resolution=self.resolution,
            num_workers=self.num_workers,
            device=self._device(),
            distributed=distributed_world(),
            seed=self.seed,
            os_cache=self.os_cache,
            epoch=self._trainer_epoch if trainer is not None else None,
        )

    def train_dataloader(self):
        """Shuffled, augmented batches of the train split (each rank its own share under DDP); with augment=False,
        eval-transform batches in file order."""
        return self._loader("train", train=self.augment)

    def val_dataloader(self):
        """Eval-transform batches of the val split (each rank its own share under DDP)."""
        return self._loader("val", train=False)
