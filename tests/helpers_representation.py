"""Shared pieces of the representation-analysis tests: a tiny data directory with held-out classes, any network of the
registry saved as a `specialize train`-style checkpoint, a stimulus list, and image sets held in memory."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
from helpers_data import built_once_per_session, make_tiny_data_dir
from torch import nn

from common.io import write_json, write_parquet
from data_pipeline.behaviour import write_stimulus_list
from data_pipeline.data_dir import DataDir
from data_pipeline.label_space import LabelSpace
from lightning_modules.checkpoint import load_model
from lightning_modules.config import TrainConfig
from lightning_modules.vgg import vgg16

HELDOUT_CLASSES = 3
HELDOUT_PER_CLASS = 6


def session_heldout_data(tmp_path_factory) -> Path:
    """Face and object data (4 classes each, 32 px) with 3 held-out classes of 6 images per task, built once per
    pytest session."""
    return built_once_per_session(
        tmp_path_factory,
        "heldout_data",
        lambda root: make_tiny_data_dir(
            root, classes=4, train=6, test=HELDOUT_PER_CLASS, heldout=HELDOUT_CLASSES, size=32, seed=0
        ),
    )


def save_checkpoint(
    model: nn.Module,
    classes: Mapping[str, Sequence[str]],
    path: Path,
    data_dir: Path,
    width: float,
    batch_norm: bool,
    resolution: int = 32,
    arch: str = "vgg16",
) -> Path:
    """`model` (the registry's `arch`) as a checkpoint `load_model` reads (as `specialize train` writes it), trained
    on `classes`."""
    config = TrainConfig(tasks=list(classes))
    config.data.dir, config.data.resolution = str(data_dir), resolution
    config.model.width, config.model.batch_norm, config.model.dropout = width, batch_norm, 0.0
    config.model.arch = arch
    hparams = {"config": config.to_dict(), "label_space": LabelSpace.from_classes(classes).to_dict()}
    state = {f"model.{key}": value for key, value in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": hparams}, path)
    return path


def untrained_networks(data: Path, root: Path, width: float, names: Sequence[str]) -> dict[str, Path]:
    """Untrained tiny networks on `data` (batch norm, 32 px), each seeded by its position in `names`: "face" and
    "object" single-task, "dual" on both tasks; name -> checkpoint under `root`."""
    classes = {task: DataDir(data).classes(task) for task in ("face", "object")}
    specs = {"face": {"face": classes["face"]}, "object": {"object": classes["object"]}, "dual": classes}
    paths = {}
    for seed, name in enumerate(names):
        torch.manual_seed(seed)
        model = vgg16(sum(map(len, specs[name].values())), width=width, batch_norm=True, dropout=0.0)
        paths[name] = save_checkpoint(model, specs[name], root / f"{name}.ckpt", data, width, batch_norm=True)
    return paths


def fake_sweep(directory: Path, checkpoint: Path, ranks: dict[str, list[int]]) -> Path:
    """A lesion-sweep output directory holding only what `visualize --top` reads: the ranking and the manifest."""
    rows = [
        {"layer": "conv5_3", "task": task, "filter": f, "rank": rank}
        for task, order in ranks.items()
        for rank, f in enumerate(order)
    ]
    write_parquet(directory / "ranking.parquet", pd.DataFrame(rows))
    write_json(directory / "manifest.json", {"checkpoint_sha256": load_model(checkpoint).sha256})
    write_json(directory / "config.json", {})
    return directory


def stimulus_list(data: Path, out: Path) -> Path:
    """A list of 4 images of each held-out face class (the synthetic folders beside the data directory)."""
    images = sorted((data.parent / "synth" / "face" / "heldout").rglob("*.jpg"))
    return write_stimulus_list(out, [path for path in images if int(path.stem) < 4])


class MemoryImages:
    """An `analysis.activations.ImageSet` over images in memory, yielded in batches of `batch_size` at most."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, name: str = "memory"):
        self.name, self.images, self.labels = name, images, labels
        self.served: list[int] = []  # size of every batch handed out

    def count(self) -> int:
        return len(self.images)

    def label_names(self) -> Sequence[str]:
        return [f"class_{label}" for label in range(int(self.labels.max()) + 1)]

    def batches(self, resolution: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.images), batch_size):
            self.served.append(len(self.images[start : start + batch_size]))
            yield self.images[start : start + batch_size], self.labels[start : start + batch_size]

    def identity(self) -> dict:
        return {"images": len(self.images)}
