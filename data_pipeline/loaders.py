"""FFCV loaders with METHOD's transforms, on CPU or CUDA, single-process or distributed.

Train: resize the shorter side to resolution * 256/224 and take a random `resolution` square crop (done in
one step by cropping a square of min side * 224/256 and resizing it), random grayscale (p = 0.2), normalise
with mean 0.5 and std 0.5 per channel. Eval: the same with a centre crop and no grayscale. No flips.
The random crop and grayscale are seeded per sample by (seed, epoch, rank, sample index) (`augment.py`), so
training with augmentation is reproducible and resumable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace

import numba
import numpy as np
import torch
from ffcv.fields.basics import IntDecoder
from ffcv.fields.rgb_image import CenterCropRGBImageDecoder
from ffcv.loader import OrderOption
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State
from ffcv.transforms import ModuleWrapper, ToDevice, ToTensor, ToTorchImage

from common.errors import UserError
from data_pipeline.augment import (
    CROP_RATIO,
    GRAYSCALE,
    EpochKey,
    SeededGrayscale,
    SeededLoader,
    SeededSquareCropDecoder,
    uniform,
)
from data_pipeline.ffcv_fixes import install_ffcv_fixes

GRAYSCALE_PROBABILITY = 0.2


@numba.njit(nogil=True, fastmath=False)
def normalise_image(image: np.ndarray, out: np.ndarray, gray: bool) -> None:
    """One uint8 HxWx3 image -> float32 3xHxW, (x - 127.5) / 127.5, or its luma in all channels when `gray`.

    Compiled on its own without fast math: the same values whatever loop FFCV's (fast-math, parallel or not) pass
    around it compiles to, so batches do not depend on the number of loader threads."""
    half = np.float32(127.5)
    for y in range(image.shape[0]):
        for x in range(image.shape[1]):
            if gray:
                luma = np.float32(0.299 * image[y, x, 0] + 0.587 * image[y, x, 1] + 0.114 * image[y, x, 2])
                out[0, y, x] = out[1, y, x] = out[2, y, x] = (luma - half) / half
            else:
                for c in range(3):
                    out[c, y, x] = (np.float32(image[y, x, c]) - half) / half


class NormaliseToCHW(Operation):
    """CPU: uint8 HxWx3 images -> float32 3xHxW normalised to mean 0.5 / std 0.5 ((x - 127.5) / 127.5), and, with
    probability `grayscale` per sample (drawn by `augment.uniform` from the epoch's `key` and the sample's index),
    the image's luma (ITU-R 601 weights, as torchvision) in all three channels.

    One parallel pass over the batch (numba); on a GPU the same work is done by `Normalise` and `SeededGrayscale`.
    """

    def __init__(self, grayscale: float = 0.0, key: EpochKey | None = None):
        super().__init__()
        self.grayscale, self.key = grayscale, key or EpochKey(seed=0)

    def generate_code(self) -> Callable:
        my_range = Compiler.get_iterator()
        probability, epoch_key = self.grayscale, self.key

        def normalise(images, dst, indices):
            with numba.objmode(key="uint64"):
                key = epoch_key()
            for i in my_range(images.shape[0]):
                gray = probability > 0 and uniform(key, indices[i], GRAYSCALE) < probability
                normalise_image(images[i], dst[i], gray)
            return dst[: images.shape[0]]

        normalise.is_parallel = True
        normalise.with_indices = True
        return normalise

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        height, width, channels = previous_state.shape
        shape, dtype = (channels, height, width), np.dtype("float32")
        return replace(previous_state, jit_mode=True, shape=shape, dtype=dtype), AllocationQuery(shape, dtype)


class Normalise(torch.nn.Module):
    """GPU: uint8 NCHW -> float32 with per-channel mean 0.5 and std 0.5, i.e. (x - 127.5) / 127.5."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(torch.float32).sub_(127.5).div_(127.5)


class OffsetLabels(torch.nn.Module):
    """Flatten (N, 1) labels to (N,) int64 and add a constant (a task's offset in a global label space)."""

    def __init__(self, offset: int):
        super().__init__()
        self.offset = offset

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return labels.reshape(-1).to(torch.int64) + self.offset


def _device(device: str | torch.device) -> torch.device:
    """A concrete device (cuda -> cuda:<current index>, as FFCV needs an index)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def image_pipeline(train: bool, resolution: int, device: torch.device, key: EpochKey, normalise: bool = True) -> list:
    """FFCV operations from stored image to normalised float32 NCHW batch on `device`; train-time draws by `key`.

    On CPU, normalisation (and train-time grayscale) is one fused numba pass; on a GPU, uint8 batches are
    moved first and normalised there. normalise=False (eval only) stops at the uint8 NCHW crops;
    `data_pipeline.normalise.normalise_uint8` normalises them later, bit for bit as here.
    """
    if train:
        ops: list = [SeededSquareCropDecoder((resolution, resolution), key)]
    else:
        ops = [CenterCropRGBImageDecoder((resolution, resolution), ratio=CROP_RATIO)]
    if not normalise:
        if train:
            raise ValueError("normalise=False is for the eval transform; training batches are normalised and augmented")
        moved = [] if device.type == "cpu" else [ToDevice(device, non_blocking=True)]
        return ops + [ToTensor(), *moved, ToTorchImage(channels_last=False)]
    grayscale = GRAYSCALE_PROBABILITY if train else 0.0
    if device.type == "cpu":
        return ops + [NormaliseToCHW(grayscale, key), ToTensor()]
    ops += [
        ToTensor(),
        ToDevice(device, non_blocking=True),
        ToTorchImage(channels_last=True),
        ModuleWrapper(Normalise()),
    ]
    return ops + [SeededGrayscale(grayscale, key)] if train else ops


def label_pipeline(label_offset: int, device: torch.device) -> list:
    """FFCV operations from stored label to int64 (N,) batch on `device`, shifted by `label_offset`."""
    ops: list = [IntDecoder(), ToTensor()]
    if device.type != "cpu":
        ops.append(ToDevice(device, non_blocking=True))
    return ops + [ModuleWrapper(OffsetLabels(label_offset))]


def traversal_order(train: bool, distributed: bool, os_cache: bool) -> OrderOption:
    """Sequential for eval; random for training, quasi-random when data is read from disk (os_cache off, one
    process)."""
    if not train:
        return OrderOption.SEQUENTIAL
    if not os_cache and not distributed:
        return OrderOption.QUASI_RANDOM
    return OrderOption.RANDOM


def make_loader(
    beton_path: str | os.PathLike,
    *,
    train: bool,
    batch_size: int,
    resolution: int,
    num_workers: int,
    device: str | torch.device = "cpu",
    distributed: bool = False,
    seed: int = 0,
    indices: Sequence[int] | None = None,
    label_offset: int = 0,
    drop_last: bool | None = None,
    os_cache: bool = True,
    epoch: Callable[[], int] | None = None,
    normalise: bool = True,
) -> SeededLoader:
    """An FFCV Loader yielding (images float32 NCHW normalised, labels int64 + label_offset).

    normalise=False (eval only) yields the uint8 NCHW crops instead (see `image_pipeline`).

    distributed=True splits every epoch across torch.distributed ranks (each sample once; the rank and world
    size come from the initialised process group). os_cache=False reads pages from disk per process instead
    of the OS page cache (data larger than RAM) and uses QUASI_RANDOM order unless distributed.
    The order and the train-time crop and grayscale of an epoch depend only on (seed, epoch, rank): `epoch`, when
    given, names the epoch each iteration loads (the trainer's), else epochs count from 0 as the loader is iterated.
    As with any FFCV loader, batches live in reused buffers: clone them to keep them past the next iteration.
    """
    if not os.path.isfile(beton_path):
        raise UserError(f"{beton_path} does not exist; build the data directory with `specialize data build`")
    install_ffcv_fixes()  # before the Loader compiles its pipeline and sets its thread count
    device = _device(device)
    key = EpochKey(seed, torch.distributed.get_rank() if distributed else 0)
    return SeededLoader(
        str(beton_path),
        batch_size=batch_size,
        num_workers=num_workers,
        os_cache=os_cache,
        order=traversal_order(train, distributed, os_cache),
        distributed=distributed,
        seed=seed,
        indices=None if indices is None else np.asarray(indices, dtype=np.uint64),
        pipelines={
            "image": image_pipeline(train, resolution, device, key, normalise),
            "label": label_pipeline(label_offset, device),
        },
        drop_last=train if drop_last is None else drop_last,
        key=key,
        epoch=epoch,
    )
