"""Image sets for analyses with the eval transform: fixed, seeded subsets as whole tensors (lesion ranking), a whole
split streamed in batches (`stream_batches`, for sets too large to hold in memory), or image files named in a list
(`stream_image_files`: RSA stimuli) with the same eval transform as the loaders."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from common.errors import UserError
from data_pipeline.data_dir import DataDir
from data_pipeline.images import BadImage, decode_rgb
from data_pipeline.label_space import LabelSpace
from data_pipeline.loaders import CROP_RATIO, make_loader

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


def sample_images(
    data_dir: str | os.PathLike | DataDir,
    task: str,
    split: str,
    n: int | None,
    seed: int,
    resolution: int,
    label_space: LabelSpace | None = None,
    num_workers: int | None = None,
    normalise: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed seeded subset of n images of one task's split with the eval transform, as (images, labels).

    Labels are local to the task, or shifted into `label_space` when it is given. normalise=False gives the
    uint8 crops (a quarter of the memory; `data_pipeline.normalise.normalise_uint8` normalises them exactly).
    """
    data = data_dir if isinstance(data_dir, DataDir) else DataDir(data_dir)
    if label_space is not None and split == "heldout":
        raise UserError("held-out classes have no place in a model's label space; call without label_space for heldout")
    offset = label_space.offset(task) if label_space is not None else 0
    path = data.beton(task, split)
    indices = sample_indices(num_samples(path), n, seed)
    batches = list(stream_batches(path, resolution, BATCH_SIZE, offset, indices, num_workers, normalise))
    return torch.cat([images for images, _ in batches]), torch.cat([labels for _, labels in batches])


def stream_batches(
    beton_path: str | os.PathLike,
    resolution: int,
    batch_size: int = BATCH_SIZE,
    label_offset: int = 0,
    indices: Sequence[int] | None = None,
    num_workers: int | None = None,
    normalise: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) batches of a .beton (all samples, or `indices`) in file order with the eval transform.

    Labels are shifted by `label_offset`; normalise=False yields uint8 images. Each batch is a copy, so it
    outlives the loader's next step (FFCV reuses its batch buffers); only one batch is held at a time. Closing the
    generator early stops the loader's epoch.
    """
    loader = make_loader(
        beton_path,
        train=False,
        batch_size=batch_size,
        resolution=resolution,
        num_workers=num_workers or min(4, os.cpu_count() or 1),
        indices=indices,
        label_offset=label_offset,
        drop_last=False,
        normalise=normalise,
    )
    try:
        for images, labels in loader:
            yield images.clone(), labels.clone()
    finally:  # a consumer that stops early (or fails) leaves no loader thread behind
        loader.stop()


def eval_transform(image: np.ndarray, resolution: int) -> torch.Tensor:
    """The loaders' eval transform of one decoded uint8 HxWx3 image, as FFCV does it: the centred square of 224/256
    of the shorter side, resized to `resolution` (area interpolation), normalised to mean 0.5 / std 0.5, float32 CHW."""
    import cv2

    height, width = image.shape[:2]
    side = int(CROP_RATIO * min(height, width))
    top, left = (height - side) // 2, (width - side) // 2
    crop = np.ascontiguousarray(image[top : top + side, left : left + side])
    resized = cv2.resize(crop, (resolution, resolution), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(resized).permute(2, 0, 1).float().sub_(127.5).div_(127.5)


def stream_image_files(
    paths: Sequence[str | os.PathLike], resolution: int, batch_size: int = BATCH_SIZE
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, indices) batches of image files in list order with the eval transform; an undecodable file is a
    UserError naming it. The label of each image is its position in `paths`."""
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        images = [eval_transform(_decoded(path), resolution) for path in chunk]
        yield torch.stack(images), torch.arange(start, start + len(chunk))


def _decoded(path: str | os.PathLike) -> np.ndarray:
    try:
        return decode_rgb(path)[0]
    except BadImage as error:
        raise UserError(f"image {os.fsdecode(path)!r}: {error}; fix the file or remove it from the list") from None
