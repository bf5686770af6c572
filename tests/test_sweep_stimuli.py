"""Sweep images kept as uint8 (a quarter of the object store) give the loader's float32 values and the same tables."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from helpers_sweeps import RESOLUTION, tiny_vgg
from helpers_train import session_tiny_data

from data_pipeline.normalise import normalise_uint8
from data_pipeline.sample import sample_images
from sweeps.engine import lesion_sweep
from sweeps.stimuli import Stimuli

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_uint8_crops_normalise_to_the_loaders_floats_bit_for_bit(tmp_path_factory):
    data = session_tiny_data(tmp_path_factory)
    crops, labels = sample_images(data, "face", "train", 12, seed=1, resolution=32, normalise=False)
    floats, float_labels = sample_images(data, "face", "train", 12, seed=1, resolution=32)
    assert crops.dtype == torch.uint8 and crops.shape == floats.shape == (12, 3, 32, 32)
    assert len(torch.unique(crops)) > 100  # many pixel values are compared, not a few
    assert torch.equal(normalise_uint8(crops), floats) and torch.equal(labels, float_labels)


def random_uint8_tasks(seed: int = 3) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return {
        task: (
            torch.randint(0, 256, (count, 3, RESOLUTION, RESOLUTION), dtype=torch.uint8, generator=generator),
            torch.randint(0, 3, (count,), generator=generator) + offset,
        )
        for task, count, offset in (("a", 9, 0), ("b", 7, 3))
    }


def normalised_in_numpy(images: torch.Tensor) -> torch.Tensor:
    """The loaders' float32 values, (x - 127.5) / 127.5, computed independently of `normalise_uint8`."""
    half = np.float32(127.5)
    return torch.from_numpy((images.numpy().astype(np.float32) - half) / half)


def test_sweep_of_uint8_images_equals_sweep_of_normalised_floats():
    model, crops = tiny_vgg(seed=4), random_uint8_tasks()
    floats = {task: (normalised_in_numpy(images), labels) for task, (images, labels) in crops.items()}
    layers = ["conv1_1", "conv3_2", "conv5_3"]
    pd.testing.assert_frame_equal(
        lesion_sweep(model, crops, layers=layers, batch_size=8),
        lesion_sweep(model, floats, layers=layers, batch_size=8),
    )


def test_uint8_stimuli_pickle_at_a_quarter_of_float_and_do_not_mix_with_floats():
    crops = random_uint8_tasks()
    floats = {task: (normalised_in_numpy(images), labels) for task, (images, labels) in crops.items()}
    stored = Stimuli.from_tasks(crops)
    assert stored.images.dtype == torch.uint8
    assert len(pickle.dumps(stored)) < len(pickle.dumps(Stimuli.from_tasks(floats))) / 3.5
    batch, _, _ = next(pickle.loads(pickle.dumps(stored)).batches(16, torch.device("cpu")))
    assert torch.equal(batch, torch.cat([images for images, _ in floats.values()]))
    with pytest.raises(ValueError, match="uint8 and some float"):
        Stimuli.from_tasks({"a": crops["a"], "b": floats["b"]})
