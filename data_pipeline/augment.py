"""Seeded augmentation: every random draw of the train transform is a function of (seed, epoch, rank, sample index).

FFCV's own random transforms draw from numba's generators, which are not seeded and which the loader's parallel
threads share in no fixed order, so two runs with the same seed differed. Here each draw is a counter-based random
number (`uniform`): a SplitMix64 hash of the epoch's key and the sample's index in the .beton, one stream per kind of
draw. The key of an epoch (`EpochKey`) mixes the loader's seed, the epoch and the process rank. So a run is
reproducible, a run resumed at an epoch draws what the uninterrupted run drew there, and nothing depends on thread
count or scheduling. The CPU and GPU paths take the same decisions (one `uniform`, compiled by numba or on numpy
arrays).

`SeededLoader` sets the key's epoch whenever an epoch starts: the epoch a callback names (the trainer's epoch under
Lightning, so that a resumed run continues the sequence), else FFCV's own count. It runs one epoch at a time: an
epoch left unfinished is stopped when the next starts (or by `stop`). Compiled operations read the key
through numba's object mode, once per batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numba
import numpy as np
import torch
from ffcv.fields.rgb_image import IMAGE_MODES, ResizedCropRGBImageDecoder
from ffcv.libffcv import imdecode, resize_crop
from ffcv.loader import Loader
from ffcv.loader.epoch_iterator import EpochIterator
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State
from numba.core.errors import NumbaWarning
from numba.extending import register_jitable

from data_pipeline.ffcv_fixes import stop_epoch

CROP_RATIO = 224 / 256
# Streams: independent draws of one sample in one epoch.
CROP_TOP, CROP_LEFT, GRAYSCALE = np.uint64(0), np.uint64(1), np.uint64(2)
STREAMS = np.uint64(3)
_GAMMA, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_UNIT = 1.0 / 2.0**53
_MASK64 = 2**64 - 1
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601, as torchvision's grayscale

# The key is read in object mode once per batch; numba notes that this part holds the GIL, which is intended.
warnings.filterwarnings(
    "ignore", message="Code running in object mode won't allow parallel execution", category=NumbaWarning
)


@register_jitable
def splitmix64(x):
    """SplitMix64's finaliser: a well-mixed uint64 from a uint64 (in numba-compiled code, or on numpy uint64 arrays)."""
    x = np.uint64(x) + _GAMMA
    x = (x ^ (x >> _S30)) * _MIX1
    x = (x ^ (x >> _S27)) * _MIX2
    return x ^ (x >> _S31)


@register_jitable
def uniform(key, index, stream):
    """A number in [0, 1) for (epoch key, sample index, stream); the same in compiled code and on numpy arrays."""
    return (splitmix64(np.uint64(key) ^ splitmix64(np.uint64(index) * STREAMS + stream)) >> _S11) * _UNIT


class EpochKey:
    """The random key of the epoch being loaded: a hash of (seed, epoch, rank). Calling it gives the key."""

    def __init__(self, seed: int, rank: int = 0):
        self.seed, self.rank, self.epoch = seed, rank, 0

    def __call__(self) -> int:
        entropy = [self.seed & _MASK64, self.epoch, self.rank]
        return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


class SeededLoader(Loader):
    """An FFCV Loader whose epoch (order and augmentation key) is, at the start of each epoch, the one `epoch` names
    (the trainer's epoch), or FFCV's own count when `epoch` is None."""

    def __init__(self, *args, key: EpochKey, epoch: Callable[[], int] | None = None, **kwargs):
        self.key, self.epoch = key, epoch
        self.running: EpochIterator | None = None
        super().__init__(*args, **kwargs)

    def __iter__(self) -> EpochIterator:
        self.stop()
        if self.epoch is not None:
            self.next_epoch = self.epoch()
        self.key.epoch = self.next_epoch
        self.running = super().__iter__()
        return self.running

    def stop(self) -> None:
        """Stop the epoch in progress, if any (its thread exits; see `stop_epoch`); a finished epoch is left alone."""
        running, self.running = self.running, None
        if running is not None and running.is_alive():
            stop_epoch(running)


@register_jitable
def seeded_square_crop(height, width, ratio, key, index):
    """The random square window of side ratio * min(height, width) for one sample: (top, left, height, width)."""
    side = int(ratio * min(height, width))
    top = int(uniform(key, index, CROP_TOP) * (height - side + 1))
    left = int(uniform(key, index, CROP_LEFT) * (width - side + 1))
    return top, left, side, side


class SeededSquareCropDecoder(ResizedCropRGBImageDecoder):
    """Decode, take a seeded random square of side `ratio` x the shorter side, resize to `output_size`: the train
    crop of METHOD (resize the shorter side to 256, random 224 crop) in one step. FFCV's decode loop with the crop
    drawn by `seeded_square_crop` instead of numba's generator."""

    def __init__(self, output_size: tuple[int, int], key: EpochKey, ratio: float = CROP_RATIO):
        super().__init__(output_size)
        self.key, self.ratio, self.scale = key, ratio, None

    @property
    def get_crop_generator(self) -> Callable:
        return seeded_square_crop

    def generate_code(self) -> Callable:
        jpg = IMAGE_MODES["jpg"]
        mem_read, my_range, ratio, epoch_key = self.memory_read, Compiler.get_iterator(), self.ratio, self.key
        imdecode_c, resize_crop_c = Compiler.compile(imdecode), Compiler.compile(resize_crop)

        def decode(batch_indices, my_storage, metadata, storage_state):
            with numba.objmode(key="uint64"):
                key = epoch_key()
            destination, temp_storage = my_storage
            for dst_ix in my_range(len(batch_indices)):
                source_ix = batch_indices[dst_ix]
                field = metadata[source_ix]
                image_data = mem_read(field["data_ptr"], storage_state)
                height, width = np.uint32(field["height"]), np.uint32(field["width"])
                if field["mode"] == jpg:
                    temp_buffer = temp_storage[dst_ix]
                    imdecode_c(image_data, temp_buffer, height, width, height, width, 0, 0, 1, 1, False, False)
                    temp_buffer = temp_buffer.reshape(-1)[: 3 * height * width].reshape(height, width, 3)
                else:
                    temp_buffer = image_data.reshape(height, width, 3)
                i, j, h, w = seeded_square_crop(height, width, ratio, key, source_ix)
                resize_crop_c(temp_buffer, i, i + h, j, j + w, destination[dst_ix])
            return destination[: len(batch_indices)]

        decode.is_parallel = True
        return decode


def grayscale_draws(key: int, indices: np.ndarray, probability: float) -> np.ndarray:
    """Which samples (by .beton index) an epoch with this key turns gray: the CPU path's decision, on numpy."""
    return uniform(np.uint64(key), np.asarray(indices, dtype=np.uint64), GRAYSCALE) < probability


class SeededGrayscale(Operation):
    """GPU: replace a sample by its luma in all channels when `grayscale_draws` says so (on normalised batches: the
    weights sum to 1, so it commutes with the per-channel normalisation)."""

    def __init__(self, probability: float, key: EpochKey):
        super().__init__()
        self.probability, self.key = probability, key

    def generate_code(self) -> Callable:
        probability, epoch_key = self.probability, self.key
        weights = torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)

        def grayscale(images: torch.Tensor, _, indices: np.ndarray) -> torch.Tensor:
            chosen = torch.from_numpy(grayscale_draws(epoch_key(), indices, probability)).to(images.device)
            luma = (images * weights.to(images.device, images.dtype)).sum(dim=1, keepdim=True)
            return torch.where(chosen.view(-1, 1, 1, 1), luma.expand_as(images), images)

        grayscale.with_indices = True
        return grayscale

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery | None]:
        return previous_state, None
