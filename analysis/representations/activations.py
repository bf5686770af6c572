"""Activations of a network's named layers for image sets, streamed to disk in bounded memory, fanned out with Ray.

What a layer's activation is (`lightning_modules.units.representation_layers`, any architecture): a lesion unit's
maps (VGG16's conv1_1 ... conv5_3 after their ReLU, after batch norm and ReLU in a batch-norm model; a ResNet block's
output after the residual sum and ReLU, e.g. `layer4.1`), a hidden fully connected layer after its ReLU (VGG's fc6
and fc7, AlexNet's `classifier.1` and `classifier.4`), or `output`, the logits. `forward_layers` runs a network's
traced graph node by node and stops after the deepest layer asked for;
`pooled` averages conv maps over space (`pooling="mean"`, C values per image) or keeps them whole ("full").

`extract_activations(networks, image_sets, out, settings)` runs one Ray task per (network, image set), each
streaming its images batch by batch (a task's split of a data directory in file order with the eval
transform, or image files named in a stimulus list) and appending every layer's activations to an NPY file:

    OUT/<network>/<image set>/<layer>.npy     (images, C) pooled, (images, C, H, W) full, (images, F) for fc
    OUT/<network>/<image set>/images.parquet  image (row), label, name (class name, or stimulus name)
    OUT/config.json, OUT/manifest.json

NPY files are written to a temporary name and renamed when complete; images.parquet is written last and marks
the unit finished, so a rerun skips finished units and redoes interrupted ones. Memory is one batch of
activations; files are read back as memory maps (`Activations.layer`). Workers read the data and write the
outputs by path: on a cluster, OUT and the data must be on a shared file system.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from analysis.representations.settings import ActivationSettings
from common.errors import UserError
from common.io import atomic_path, file_sha256, readable_parquet
from common.ray_runner import WorkUnit, ray_session, run_units
from common.stage import StageDir
from common.wandb_runs import ArtifactFiles, StageLog, model_artifact
from lightning_modules.units import representation_layers, walk
from sweeps.devices import on_device

Batch = tuple[torch.Tensor, torch.Tensor]  # images (N, 3, H, W), labels (N,)
IMAGES_TABLE = "images.parquet"


# ------------------------------------------------------------------------------------ layers of a network


def forward_layers(
    model: nn.Module, images: torch.Tensor, layers: Sequence[str], pooling: str = "full"
) -> dict[str, torch.Tensor]:
    """The activations of `layers` (the network's representation layers, `lightning_modules.units`) for a batch, each
    pooled as it is computed (so whole maps are not kept when averaged), computing nothing past the deepest layer."""
    nodes = representation_layers(model)
    unknown = [layer for layer in layers if layer not in nodes]
    if unknown:
        raise ValueError(f"unknown layer(s) {unknown}; choose from {', '.join(nodes)}")
    wanted, outputs = {nodes[layer]: layer for layer in layers}, {}
    for node, walked in walk(model, images):
        if node.op != "output" and node.name in wanted:
            outputs[wanted[node.name]] = pooled(walked.env[node], pooling)
        if len(outputs) == len(wanted):
            return {layer: outputs[layer] for layer in layers}
    raise AssertionError("the walk ended before every representation layer was reached")


def pooled(activation: torch.Tensor, pooling: str) -> torch.Tensor:
    """A conv map averaged over space ("mean") or kept whole ("full"); fc activations unchanged."""
    return activation.mean(dim=(2, 3)) if activation.ndim == 4 and pooling == "mean" else activation


# ------------------------------------------------------------------------------------------ image sets


class ImageSet(Protocol):
    """Named images with labels, streamed at any resolution with the eval transform."""

    name: str

    def count(self) -> int:
        """Number of images."""

    def label_names(self) -> Sequence[str]:
        """The name of each label (a class, or a stimulus)."""

    def batches(self, resolution: int, batch_size: int) -> Iterator[Batch]:
        """The images in a fixed order, in batches."""

    def identity(self) -> dict[str, Any]:
        """What defines the images, for the same-job check."""


@dataclass(frozen=True)
class SplitImages:
    """One task's split of a built data directory, in file order; labels are local class indices."""

    name: str
    beton: str
    class_names: tuple[str, ...]

    def count(self) -> int:
        """Number of images in the .beton."""
        from data_pipeline.sample import num_samples

        return num_samples(self.beton)

    def label_names(self) -> Sequence[str]:
        """Class names, by label."""
        return self.class_names

    def batches(self, resolution: int, batch_size: int) -> Iterator[Batch]:
        """The split's images in file order with the eval transform."""
        from data_pipeline.sample import stream_batches

        return stream_batches(self.beton, resolution, batch_size)

    def identity(self) -> dict[str, Any]:
        """The .beton's path, size and classes."""
        return {
            "beton": str(Path(self.beton).resolve()),
            "bytes": os.path.getsize(self.beton),
            "classes": list(self.class_names),
        }


def split_images(data_dir: str | os.PathLike, task: str, split: str) -> SplitImages:
    """The images of `task`'s `split` (train, test or heldout) in a data directory, named <task>_<split>."""
    from data_pipeline.data_dir import DataDir

    data = DataDir(data_dir)
    classes = data.heldout_classes(task) if split == "heldout" else data.classes(task)
    return SplitImages(f"{task}_{split}", str(data.beton(task, split).absolute()), tuple(classes))


@dataclass(frozen=True)
class FileImages:
    """Image files (RSA stimuli) in list order; each image's label is its position, named by `names`."""

    name: str
    paths: tuple[str, ...]
    names: tuple[str, ...]

    def count(self) -> int:
        """Number of files."""
        return len(self.paths)

    def label_names(self) -> Sequence[str]:
        """Stimulus names, by position."""
        return self.names

    def batches(self, resolution: int, batch_size: int) -> Iterator[Batch]:
        """The files decoded with the eval transform."""
        from data_pipeline.sample import stream_image_files

        return stream_image_files(self.paths, resolution, batch_size)

    def identity(self) -> dict[str, Any]:
        """A digest of the files' names and bytes."""
        digest = hashlib.sha256()
        for name, path in zip(self.names, self.paths):
            digest.update(os.fsencode(name) + b"\0" + Path(path).read_bytes())
        return {"stimuli": len(self.paths), "sha256": digest.hexdigest()}


# ------------------------------------------------------------------------------------------ writing


class NpyWriter:
    """Appends row batches to an NPY file of `rows` rows; the header is written with the first batch's row shape."""

    def __init__(self, handle: Any, rows: int, dtype: np.dtype):
        self.handle, self.rows, self.dtype = handle, rows, np.dtype(dtype)
        self.written, self.row_shape = 0, None

    def write(self, batch: np.ndarray) -> None:
        """Append a batch of rows (cast to the file's dtype)."""
        if self.row_shape is None:
            self.row_shape = batch.shape[1:]
            header = {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": (self.rows, *self.row_shape),
            }
            np.lib.format.write_array_header_2_0(self.handle, header)
        if batch.shape[1:] != self.row_shape or self.written + len(batch) > self.rows:
            raise ValueError(
                f"batch of shape {batch.shape} does not fit an NPY of {self.rows} rows of {self.row_shape}"
            )
        self.handle.write(np.ascontiguousarray(batch, dtype=self.dtype).tobytes())
        self.written += len(batch)

    def check_complete(self) -> None:
        """ValueError unless every row was written."""
        if self.written != self.rows:
            raise ValueError(f"wrote {self.written} rows of {self.rows}")


def write_activations(
    model: nn.Module,
    images: ImageSet,
    resolution: int,
    directory: Path,
    settings: ActivationSettings,
    device: torch.device | str | None = None,
) -> pd.DataFrame:
    """Stream `images` through `model` (on `device`) and write one NPY per layer into `directory`, each renamed into
    place only when complete; returns the image table (image, label, name). Memory: one batch."""
    from contextlib import ExitStack

    rows = images.count()
    if rows == 0:
        raise UserError(f"image set {images.name} holds no images")
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(".*.tmp"):  # left by a killed task
        stale.unlink(missing_ok=True)
    labels, dtype = [], getattr(torch, settings.dtype)
    with ExitStack() as stack, on_device(model, device) as (net, target), torch.inference_mode():
        writers = {}
        for layer in settings.layers:
            tmp = stack.enter_context(atomic_path(directory / f"{layer}.npy"))
            writers[layer] = NpyWriter(stack.enter_context(open(tmp, "wb")), rows, settings.dtype)
        for batch, batch_labels in images.batches(resolution, settings.batch_size):
            for layer, activation in forward_layers(net, batch.to(target), settings.layers, settings.pooling).items():
                writers[layer].write(activation.to(dtype).cpu().numpy())
            labels.append(batch_labels.cpu())
        for writer in writers.values():
            writer.check_complete()
    label_array = torch.cat(labels).numpy()
    return pd.DataFrame(
        {
            "image": np.arange(rows),
            "label": label_array,
            "name": np.asarray(images.label_names(), dtype=object)[label_array],
        }
    )


def write_on_worker(
    model: nn.Module, images: ImageSet, resolution: int, directory: Path, settings: ActivationSettings
) -> pd.DataFrame:
    """`write_activations` as a Ray task: on the GPU Ray assigned to it, or the CPU."""
    from common.ray_runner import worker_device

    return write_activations(model, images, resolution, directory, settings, worker_device())


# ------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class Activations:
    """The stored activations of one network on one image set."""

    directory: Path

    def layer(self, name: str) -> np.ndarray:
        """A layer's activations (images first), memory-mapped read-only."""
        return np.load(self.directory / f"{name}.npy", mmap_mode="r")

    def images(self) -> pd.DataFrame:
        """The image table: image (row), label, name."""
        return pd.read_parquet(self.directory / IMAGES_TABLE)

    def complete(self, layers: Sequence[str]) -> bool:
        """Whether the unit finished: its image table reads and every layer's NPY exists."""
        return readable_parquet(self.directory / IMAGES_TABLE) and all(
            (self.directory / f"{layer}.npy").is_file() for layer in layers
        )


# ------------------------------------------------------------------------------------------ on Ray


@dataclass(frozen=True)
class Network:
    """A trained checkpoint and the name it goes by in tables and figures."""

    name: str
    checkpoint: Path


def parse_network(spec: str) -> Network:
    """'NAME=PATH' or 'PATH' (named after its run directory: runs/train/<name>/checkpoints/x.ckpt -> <name>)."""
    name, separator, path = spec.partition("=")
    if not separator:
        path = spec
        parent = Path(path).parent
        name = parent.parent.name if parent.name == "checkpoints" and parent.parent.name else Path(path).stem
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"bad network name {name!r} in {spec!r}; write NAME=PATH with a plain NAME")
    return Network(name, Path(path))


def check_unique(networks: Sequence[Network]) -> None:
    """UserError when no networks are given or two share a name."""
    names = [network.name for network in networks]
    if not names:
        raise UserError("no networks given; pass --checkpoint [NAME=]PATH")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UserError(f"two checkpoints are both named {repeated[0]!r}; name them with --checkpoint NAME=PATH")


def with_layers(loaded: Any, layers: Sequence[str], name: str) -> Any:
    """`loaded` (a `LoadedModel`), if its network has every one of `layers`; UserError naming the first it lacks and
    the layers it has."""
    available = representation_layers(loaded.model)
    missing = [layer for layer in layers if layer not in available]
    if missing:
        raise UserError(
            f"network {name} ({loaded.config.model.arch}) has no layer {missing[0]!r}; its layers are "
            f"{', '.join(available)}"
        )
    return loaded


def resolved_layers(layers: Sequence[str], networks: Sequence[Network]) -> tuple[str, ...]:
    """`layers` with their keywords (all, penultimate, last_unit) replaced by the names they stand for in the
    networks' architectures (read from their checkpoints, without their weights); UserError when those names differ
    between the networks, since every network is analysed at the same layers."""
    from lightning_modules.checkpoint import checkpoint_config
    from lightning_modules.units import resolve_layers

    archs = {network.name: checkpoint_config(network.checkpoint).model.arch for network in networks}
    names = {name: resolve_layers(arch, layers) for name, arch in archs.items()}
    first = next(iter(names), None)
    for name, resolved in names.items():
        if resolved != names[first]:
            raise UserError(
                f"layers {' '.join(layers)} are {', '.join(names[first])} in network {first} ({archs[first]}) but "
                f"{', '.join(resolved)} in {name} ({archs[name]}); analyse them apart or name layers both have "
                "(e.g. output)"
            )
    return names[first] if first is not None else tuple(layers)


def for_networks(settings: ActivationSettings, networks: Sequence[Network]) -> ActivationSettings:
    """`settings` with their layers' keywords resolved for `networks` (`resolved_layers`)."""
    return replace(settings, layers=resolved_layers(settings.layers, networks))


def layer_order(networks: Sequence[Network]) -> dict[str, tuple[str, ...]]:
    """Each network's representation layers in forward order, by name (from its checkpoint's architecture, without
    loading its weights): what tables number layers by (`layer_index`) and figures order them by."""
    from lightning_modules.checkpoint import checkpoint_config
    from lightning_modules.units import representation_names

    return {
        network.name: representation_names(checkpoint_config(network.checkpoint).model.arch) for network in networks
    }


def network_hashes(networks: Sequence[Network]) -> dict[str, str]:
    """Each network's checkpoint file SHA-256 by name: what an analysis of these networks depends on."""
    missing = [network.checkpoint for network in networks if not network.checkpoint.is_file()]
    if missing:
        raise UserError(f"checkpoint {missing[0]} does not exist; pass a .ckpt from a run's checkpoints/ directory")
    return {network.name: file_sha256(network.checkpoint) for network in networks}


def model_artifacts(networks: Sequence[Network], hashes: Mapping[str, str]) -> list[ArtifactFiles]:
    """The networks' checkpoints as the W&B `model` artifacts an analysis uses (`hashes`: `network_hashes`)."""
    return [model_artifact(network.checkpoint, hashes[network.name]) for network in networks]


def extract_activations(
    networks: Sequence[Network],
    image_sets: Sequence[ImageSet],
    out_dir: str | os.PathLike,
    settings: ActivationSettings = ActivationSettings(),
    address: str | None = None,
    progress: bool = True,
) -> dict[tuple[str, str], Activations]:
    """Activations of every network on every image set into `out_dir` (layout in the module docstring), one Ray
    task per pair, resuming finished pairs; returns {(network, image set): Activations}."""
    from lightning_modules.checkpoint import load_model

    check_unique(networks)
    settings = for_networks(settings, networks)
    stage = StageDir(
        Path(out_dir).absolute(),  # workers write there, whatever their working directory
        "activation extraction",
        {
            "networks": network_hashes(networks),
            "image_sets": {images.name: images.identity() for images in image_sets},
            **settings.result_fields(),
        },
        advice="extract into another --out",
    ).check()
    stored = {
        (network.name, images.name): Activations(stage.path / network.name / images.name)
        for network in networks
        for images in image_sets
    }
    if stage.finished:
        return stored
    pending = {key: stored[key] for key in stored if not stored[key].complete(settings.layers)}
    # only networks with work left are loaded, before anything is written (a refused checkpoint writes nothing)
    loaded = {
        network.name: with_layers(load_model(network.checkpoint), settings.layers, network.name)
        for network in networks
        if any(name == network.name for name, _ in pending)
    }
    stage.start({"checkpoints": {n.name: str(n.checkpoint.resolve()) for n in networks}})
    for activations in pending.values():
        (activations.directory / IMAGES_TABLE).unlink(missing_ok=True)
    if pending:
        _run_pending(loaded, {images.name: images for images in image_sets}, pending, settings, address, progress)
    stage.finish(
        "activations",
        StageLog(
            summary={"networks": len(networks), "image_sets": len(image_sets)},
            uses=model_artifacts(networks, stage.identity["networks"]),
        ),
        checkpoints={n.name: str(n.checkpoint) for n in networks},
        checkpoint_sha256=stage.identity["networks"],
        image_sets=stage.identity["image_sets"],
        **settings.result_fields(),
    )
    return stored


def _run_pending(
    loaded: Mapping[str, Any],
    image_sets: Mapping[str, ImageSet],
    pending: Mapping[tuple[str, str], Activations],
    settings: ActivationSettings,
    address: str | None,
    progress: bool,
) -> None:
    """The unfinished (network, image set) units as Ray tasks; each task's image table is written as it returns."""
    import ray

    with ray_session(address):
        models = {name: ray.put(loaded[name].model) for name in {name for name, _ in pending}}
        units = [
            WorkUnit(
                activations.directory / IMAGES_TABLE,
                (
                    models[name],
                    image_sets[set_name],
                    loaded[name].config.data.resolution,
                    activations.directory,
                    settings,
                ),
                size=image_sets[set_name].count(),
            )
            for (name, set_name), activations in pending.items()
        ]
        run_units(write_on_worker, units, settings.resources, "activations", progress, unit_name="image")
