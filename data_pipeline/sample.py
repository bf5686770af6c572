"""Fixed, seeded image sets for analyses (lesion ranking, decoding, RSA): eval transform, whole tensors."""

from __future__ import annotations

import os

import numpy as np
import torch

from data_pipeline.dataset import DataDir
from data_pipeline.loaders import make_loader
from data_pipeline.tasks import TaskLayout
from specialize.errors import UserError

BATCH_SIZE = 256


def num_samples(beton_path: str | os.PathLike) -> int:
    """Number of samples stored in a .beton file."""
    from ffcv.reader import Reader
    return int(Reader(str(beton_path)).num_samples)


def sample_indices(total: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset of n out of `total` samples (all of them, in file order, when n is None)."""
    if n is None:
        return np.arange(total)
    if not 0 < n <= total:
        raise UserError(f"asked for {n} images but the split holds {total}; ask for at most {total}")
    return np.sort(np.random.default_rng(seed).choice(total, n, replace=False))


def sample_images(data_dir: str | os.PathLike | DataDir, task: str, split: str, n: int | None, seed: int,
                  resolution: int, layout: TaskLayout | None = None,
                  num_workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed seeded subset of n images of one task's split with the eval transform, as (images, labels).

    Labels are local to the task, or shifted into `layout`'s global label space when it is given.
    """
    data = data_dir if isinstance(data_dir, DataDir) else DataDir(data_dir)
    if layout is not None and split == "heldout":
        raise UserError("held-out classes have no place in a model's label space; call without a layout for heldout")
    offset = layout.offset(task) if layout is not None else 0
    path = data.beton(task, split)
    indices = sample_indices(num_samples(path), n, seed)
    loader = make_loader(path, train=False, batch_size=BATCH_SIZE, resolution=resolution,
                         num_workers=num_workers or min(4, os.cpu_count() or 1), indices=indices,
                         label_offset=offset, drop_last=False)
    batches = [(images.clone(), labels) for images, labels in loader]  # FFCV reuses its batch buffers
    return torch.cat([images for images, _ in batches]), torch.cat([labels for _, labels in batches])
