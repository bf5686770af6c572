"""FFCV loaders, DataDir, sample_images and the LightningDataModule on a tiny built synthetic data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_data import session_data_dir, stored_images
from helpers_train import ROOT

from common.errors import UserError
from data_pipeline.data_dir import DataDir
from data_pipeline.datamodule import TaskDataModule
from data_pipeline.loaders import make_loader
from data_pipeline.sample import sample_images

# FFCV's numba dispatchers raise harmless KeyErrors in finalizers at garbage collection.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> DataDir:
    return DataDir(session_data_dir(tmp_path_factory))


def _epoch(loader) -> tuple[torch.Tensor, torch.Tensor]:
    batches = [(x.clone(), y) for x, y in loader]
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def test_eval_loader_is_normalised_centre_crop(data: DataDir) -> None:
    stored, labels = stored_images(data.beton("face", "test"))
    images, loaded_labels = _epoch(
        make_loader(data.beton("face", "test"), train=False, batch_size=4, resolution=28, num_workers=1, label_offset=5)
    )
    assert images.shape == (9, 3, 28, 28) and images.dtype == torch.float32 and images.is_contiguous()
    expected = torch.from_numpy(stored[:, 2:30, 2:30].astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
    assert torch.allclose(images, expected, atol=1e-5)
    assert loaded_labels.dtype == torch.int64 and loaded_labels.tolist() == (labels + 5).tolist()


def test_loaders_leave_torch_threads_alone(data: DataDir) -> None:
    assert torch.get_num_threads() == 1  # set by conftest for the session
    for train in (False, True):
        _epoch(make_loader(data.beton("face", "train"), train=train, batch_size=4, resolution=28, num_workers=2))
    assert torch.get_num_threads() == 1


def test_train_loader_crops_randomly_and_grays_a_fifth(data: DataDir) -> None:
    loader = make_loader(
        data.beton("face", "train"), train=True, batch_size=6, resolution=24, num_workers=1, drop_last=False
    )
    epochs = [_epoch(loader) for _ in range(8)]
    images = torch.cat([x for x, _ in epochs])
    assert images.shape == (8 * 18, 3, 24, 24) and images.min() >= -1.0 - 1e-6 and images.max() <= 1.0 + 1e-6
    gray = ((images[:, 0] == images[:, 1]) & (images[:, 1] == images[:, 2])).flatten(1).all(dim=1)
    assert 0.08 < gray.float().mean() < 0.35
    assert all(sorted(y.tolist()) == sorted(epochs[0][1].tolist()) for _, y in epochs)
    assert epochs[0][1].tolist() != epochs[1][1].tolist()  # reshuffled each epoch


def test_quasi_random_order_without_os_cache_sees_every_sample(data: DataDir) -> None:
    loader = make_loader(
        data.beton("object", "train"),
        train=True,
        batch_size=5,
        resolution=16,
        num_workers=1,
        os_cache=False,
        drop_last=False,
    )
    assert type(loader.traversal_order).__name__ == "QuasiRandom"
    assert sorted(_epoch(loader)[1].tolist()) == sorted(stored_images(data.beton("object", "train"))[1].tolist())


def test_sample_images_is_seeded_and_shifts_labels(data: DataDir) -> None:
    label_space = data.label_space(["face", "object"])
    first = sample_images(data.path, "object", "test", 5, seed=3, resolution=16, label_space=label_space)
    again = sample_images(data, "object", "test", 5, seed=3, resolution=16, label_space=label_space)
    other = sample_images(data, "object", "test", 5, seed=4, resolution=16)
    assert first[0].shape == (5, 3, 16, 16) and torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert first[1].min() >= 3 and first[1].max() < 6
    assert not torch.equal(first[0], other[0])
    everything = sample_images(data, "face", "heldout", None, seed=0, resolution=16)
    assert everything[1].tolist() == stored_images(data.beton("face", "heldout"))[1].tolist()
    with pytest.raises(UserError, match="at most 9"):
        sample_images(data, "face", "test", 10, seed=0, resolution=16)


def test_data_dir_errors_are_user_errors(data: DataDir, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a built data directory"):
        DataDir(tmp_path)
    with pytest.raises(UserError, match="not in"):
        data.classes("car")
    with pytest.raises(UserError, match="no pool object\\+face"):
        data.pool_beton(["object", "face"], "train")
    assert data.pool_beton(["face", "object"], "test").name == "test.beton"


def test_datamodule_reads_task_or_pool(data: DataDir) -> None:
    single = TaskDataModule(data.path, ["object"], batch_size=4, resolution=16, num_workers=1)
    assert single.label_space.tasks == ("object",) and single.beton("train") == data.beton("object", "train")
    pooled = TaskDataModule(data.path, ["face", "object"], batch_size=4, resolution=16, num_workers=1)
    assert pooled.label_space.total_classes == 6
    assert pooled.beton("val") == data.pool_beton(["face", "object"], "val")  # validation never reads the test split
    labels = _epoch(pooled.val_dataloader())[1]
    assert sorted(labels.tolist()) == sorted([c for c in range(6) for _ in range(2)])
    assert len(pooled.train_dataloader()) == 36 // 4
    plain = TaskDataModule(data.path, ["object"], batch_size=4, resolution=16, num_workers=1, augment=False)
    assert _epoch(plain.train_dataloader())[1].tolist() == stored_images(data.beton("object", "train"))[1].tolist()


def _rank_worker(rank: int, beton: str, out: str) -> None:
    """One of two gloo ranks: record the labels (= sample ids) this rank loads in two epochs."""
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=2, init_method=f"file://{out}/rendezvous")
    from data_pipeline.datamodule import distributed_world

    loader = make_loader(
        beton, train=True, batch_size=3, resolution=16, num_workers=1, distributed=distributed_world(), drop_last=False
    )
    epochs = [torch.cat([y for _, y in loader]).tolist() for _ in range(2)]
    Path(out, f"rank{rank}.json").write_text(json.dumps(epochs))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_rank_distributed_loading_sees_each_sample_once(data: DataDir, tmp_path: Path) -> None:
    from data_pipeline.beton import ImageEncoding, Item, write_beton

    sources = sorted((data.path.parent / "synth" / "face" / "train").glob("*/*.jpg"))[:14]
    beton = tmp_path / "ids.beton"
    write_beton(beton, [Item(str(path), index) for index, path in enumerate(sources)], ImageEncoding("raw"), workers=1)
    torch.multiprocessing.start_processes(_rank_worker, args=(str(beton), str(tmp_path)), nprocs=2, start_method="fork")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for epoch in range(2):
        seen = ranks[0][epoch] + ranks[1][epoch]
        assert sorted(seen) == list(range(14)) and len(ranks[0][epoch]) == len(ranks[1][epoch]) == 7
    assert ranks[0][0] != ranks[0][1]


@pytest.fixture(scope="module")
def ids_beton(data: DataDir, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """14 of the face training images in a .beton whose labels are the sample indices."""
    from data_pipeline.beton import ImageEncoding, Item, write_beton

    sources = sorted((data.path.parent / "synth" / "face" / "train").glob("*/*.jpg"))[:14]
    beton = tmp_path_factory.mktemp("ids") / "ids.beton"
    write_beton(beton, [Item(str(path), index) for index, path in enumerate(sources)], ImageEncoding("raw"), workers=1)
    return beton


def _seeded_epochs(beton: Path, seed: int, epochs: int, num_workers: int = 1, epoch=None) -> list:
    loader = make_loader(
        beton, train=True, batch_size=5, resolution=24, num_workers=num_workers, seed=seed, drop_last=False, epoch=epoch
    )
    return [_epoch(loader) for _ in range(epochs)]


def test_augmentation_is_seeded_per_epoch_whatever_the_threads(ids_beton: Path) -> None:
    first = _seeded_epochs(ids_beton, seed=7, epochs=3)
    # parallel threads draw in any order (compiled pipelines only: test_compiled_pipelines_give_the_batches_of_the_
    # uncompiled_ones compares them, on one and two threads, with these)
    again = _seeded_epochs(ids_beton, seed=7, epochs=3, num_workers=2)
    for (images, labels), (images_again, labels_again) in zip(first, again):
        assert torch.equal(labels, labels_again) and torch.equal(images, images_again)
    by_sample = [images[labels.argsort()] for images, labels in first]
    assert not torch.equal(by_sample[0], by_sample[1])  # each epoch crops and grays anew
    other = _seeded_epochs(ids_beton, seed=8, epochs=1)[0]
    assert not torch.equal(other[0][other[1].argsort()], by_sample[0])


def test_a_loader_started_at_an_epoch_loads_what_the_uninterrupted_one_loaded(ids_beton: Path) -> None:
    """As after resuming: a new loader told that the trainer is at epoch 2 gives epoch 2's order, crops and grays."""
    uninterrupted = _seeded_epochs(ids_beton, seed=7, epochs=3)
    resumed = _seeded_epochs(ids_beton, seed=7, epochs=1, epoch=lambda: 2)[0]
    assert torch.equal(resumed[1], uninterrupted[2][1]) and torch.equal(resumed[0], uninterrupted[2][0])


def test_gpu_grayscale_takes_the_cpu_paths_decisions(ids_beton: Path) -> None:
    """The GPU path's grayscale op (run here on CPU tensors) grays exactly the samples the CPU path grays."""
    from data_pipeline.augment import EpochKey, SeededGrayscale, grayscale_draws
    from data_pipeline.loaders import GRAYSCALE_PROBABILITY

    epochs = _seeded_epochs(ids_beton, seed=3, epochs=6)
    key = EpochKey(seed=3)
    for epoch, (images, labels) in enumerate(epochs):
        gray = ((images[:, 0] == images[:, 1]) & (images[:, 1] == images[:, 2])).flatten(1).all(dim=1)
        key.epoch = epoch
        assert gray.tolist() == grayscale_draws(key(), labels.numpy(), GRAYSCALE_PROBABILITY).tolist()
        colour = torch.rand(len(labels), 3, 4, 4, generator=torch.Generator().manual_seed(epoch))
        on_gpu_path = SeededGrayscale(GRAYSCALE_PROBABILITY, key).generate_code()(colour, None, labels.numpy())
        gpu_gray = (
            ((on_gpu_path[:, 0] == on_gpu_path[:, 1]) & (on_gpu_path[:, 1] == on_gpu_path[:, 2])).flatten(1).all(1)
        )
        assert torch.equal(gpu_gray, gray)
    assert 0 < sum(int(((x[:, 0] == x[:, 1]).flatten(1).all(1)).sum()) for x, _ in epochs) < 6 * 14


# Every kind of batch the project loads: train epochs (seeded crops and grays, one and two loader threads), the eval
# transform, its uint8 crops and the analyses' stream.
BATCHES = """
import sys, numpy, numba, torch
from data_pipeline import loaders
from data_pipeline.loaders import make_loader
from data_pipeline.sample import stream_batches

beton, out = sys.argv[1], sys.argv[2]
arrays = {}
for workers in (1, 2):
    loader = make_loader(beton, train=True, batch_size=5, resolution=24, num_workers=workers, seed=7, drop_last=False)
    for epoch in range(3):
        batches = [(x.clone(), y.clone()) for x, y in loader]
        arrays[f"train{workers}_{epoch}"] = torch.cat([x for x, _ in batches]).numpy()
        arrays[f"train{workers}_{epoch}_labels"] = torch.cat([y for _, y in batches]).numpy()
for normalise in (True, False):
    loader = make_loader(beton, train=False, batch_size=4, resolution=20, num_workers=2, normalise=normalise)
    arrays[f"eval_{normalise}"] = torch.cat([x.clone() for x, _ in loader]).numpy()
arrays["stream"] = torch.cat([x for x, _ in stream_batches(beton, 28, batch_size=3, num_workers=2)]).numpy()
numpy.savez(out, **arrays)
print("compiled" if isinstance(loaders.normalise_image, numba.core.dispatcher.Dispatcher) else "uncompiled")
"""


@pytest.mark.jit
def test_compiled_pipelines_give_the_batches_of_the_uncompiled_ones(ids_beton: Path, tmp_path: Path) -> None:
    """The suite runs FFCV's pipelines uncompiled (conftest); users run them compiled by numba, with parallel loader
    threads. Both give the same batches, bit for bit: every test of loading holds for the compiled pipelines too."""
    runs = {}
    for name, disable_jit in (("compiled", "0"), ("uncompiled", "1")):
        run = subprocess.run(
            [sys.executable, "-c", BATCHES, str(ids_beton), str(tmp_path / f"{name}.npz")],
            cwd=ROOT,
            env={**os.environ, "NUMBA_DISABLE_JIT": disable_jit},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.split() == [name]
        runs[name] = np.load(tmp_path / f"{name}.npz")
    compiled, uncompiled = runs["compiled"], runs["uncompiled"]
    assert sorted(compiled.files) == sorted(uncompiled.files) and len(compiled.files) == 15
    for name in compiled.files:
        assert compiled[name].dtype == uncompiled[name].dtype and np.array_equal(compiled[name], uncompiled[name]), name
    assert not np.array_equal(compiled["train1_0"], compiled["train1_1"])  # epochs differ: the draws are compared
