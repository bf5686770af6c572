"""The lesion sweep fanned out with Ray: (layer, chunk of filters) tasks, resumable, with greedy ranking.

The model and the images go into the Ray object store once; the workers of a node share the images there
(zero-copy) rather than each holding a copy. Each task runs the lesion engine on one chunk
of one layer's filters and asks for GPUs (fractions allowed) or CPUs. The driver writes each finished chunk
atomically under OUT/chunks/, so running the same sweep again skips finished chunks; Ray retries a task whose
worker died. Chunks, pass sizes and the memory budget are fixed once per output directory (config.json), so
the results do not depend on the number of workers.

Greedy ranking runs in rounds after the one-shot sweep (its round 0): in round r every not-yet-chosen filter
of each (layer, task) is lesioned together with the chosen ones, on that task's images; rounds are parallel
inside and resumable between.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pandas as pd
import ray
import torch
from tqdm.auto import tqdm

from lightning_modules.vgg import CONV_LAYERS, VGG, filters_per_layer
from specialize.errors import UserError
from specialize.io import read_json, write_json, write_parquet
from specialize.manifest import write_manifest
from sweeps.lesion import (
    ImagesByTask, Stimuli, default_budget, intact_frame, intact_totals, layer_plan, lesion_frame, on_device,
    sweep_layer, tf32, with_intact,
)
from sweeps.ranking import GreedySchedule, chosen_filters, greedy_ranking, oneshot_ranking

RANKINGS = ("oneshot", "greedy")
DEFAULT_FILTERS_PER_TASK = 16


@dataclass(frozen=True)
class SweepSettings:
    """How the sweep is split and run; the fields that shape results are fixed per output directory."""

    layers: tuple[str, ...] = CONV_LAYERS
    ranking: str = "oneshot"
    filters_per_task: int = DEFAULT_FILTERS_PER_TASK
    batch_size: int | None = None
    lesions_per_pass: int | None = None
    memory_budget: int | None = None  # bytes per task; None: half the free memory a task sees, probed once
    gpus_per_task: float = 0.0
    cpus_per_task: float = 1.0
    max_retries: int = 3
    allow_tf32: bool = False

    def __post_init__(self) -> None:
        unknown = [layer for layer in self.layers if layer not in CONV_LAYERS]
        if unknown:
            raise UserError(f"unknown layer(s) {', '.join(unknown)}; choose from {', '.join(CONV_LAYERS)}")
        if self.ranking not in RANKINGS:
            raise UserError(f"unknown ranking {self.ranking!r}; use one of {', '.join(RANKINGS)}")
        counts = {"filters per task": self.filters_per_task, "batch size": self.batch_size,
                  "lesions per pass": self.lesions_per_pass, "memory budget": self.memory_budget}
        for name, value in counts.items():
            if value is not None and value < 1:
                raise UserError(f"{name} must be at least 1, not {value}")
        if self.cpus_per_task <= 0 or self.gpus_per_task < 0 or self.max_retries < 0:
            raise UserError("CPUs per task must be positive, GPUs per task and max retries not negative")

    # Fields that change numbers; a rerun into the same directory must keep them.
    RESULT_FIELDS = ("layers", "filters_per_task", "batch_size", "lesions_per_pass", "memory_budget", "allow_tf32")


@dataclass(frozen=True)
class Chunk:
    """One Ray task: some filters of one layer, lesioned alone (one-shot) or on top of `base` (greedy)."""

    layer: str
    part: int
    filters: tuple[int, ...]
    task: str | None = None  # greedy: the task whose images are used
    round: int = 0
    base: tuple[int, ...] = ()  # greedy: filters lesioned throughout

    def path(self, out_dir: Path) -> Path:
        """Where the chunk's result lives under `out_dir`."""
        if self.task is None:
            return out_dir / "chunks" / "oneshot" / f"{self.layer}_{self.part:04d}.parquet"
        return out_dir / "chunks" / "greedy" / f"round_{self.round:02d}" / self.task / f"{self.layer}_{self.part:04d}.parquet"


def chunks_of(layer: str, candidates: Sequence[int], size: int, **fields: Any) -> list[Chunk]:
    """`candidates` of `layer` cut into chunks of `size` filters."""
    return [Chunk(layer, part, tuple(candidates[start:start + size]), **fields)
            for part, start in enumerate(range(0, len(candidates), size))]


# ------------------------------------------------------------------------------------------ Ray tasks


def worker_device() -> torch.device:
    """The GPU Ray assigned to this task, or the CPU."""
    return torch.device("cuda", 0) if ray.get_gpu_ids() else torch.device("cpu")


def set_threads(settings: SweepSettings) -> None:
    """Use as many CPU threads as the task asked for CPUs."""
    torch.set_num_threads(max(1, int(settings.cpus_per_task)))


@ray.remote
def probe_budget(settings: SweepSettings) -> int:
    """Half the free memory of the device a sweep task gets (scaled by its GPU fraction)."""
    device = worker_device()
    share = min(1.0, settings.gpus_per_task) if device.type == "cuda" else 1.0
    return int(default_budget(device) * share)


@ray.remote
def run_chunk(model: VGG, stimuli: Stimuli, chunk: Chunk, settings: SweepSettings) -> pd.DataFrame:
    """Loss and accuracy rows (layer, layer_index, filter, task, loss, accuracy) of one chunk."""
    set_threads(settings)
    images = stimuli.only(chunk.task) if chunk.task else stimuli
    with on_device(model, worker_device()) as (net, _), tf32(settings.allow_tf32):
        plan = layer_plan(net, chunk.layer, len(images.labels), len(chunk.filters), settings.batch_size,
                          settings.lesions_per_pass, settings.memory_budget, images.images.shape[1:])
        totals = sweep_layer(net, chunk.layer, chunk.filters, images, plan, base=chunk.base)
    return lesion_frame(chunk.layer, chunk.filters, totals, images)


@ray.remote
def run_intact(model: VGG, stimuli: Stimuli, settings: SweepSettings) -> pd.DataFrame:
    """Rows (task, intact_loss, intact_accuracy) of the unlesioned model."""
    set_threads(settings)
    with on_device(model, worker_device()) as (net, _), tf32(settings.allow_tf32):
        return intact_frame(intact_totals(net, stimuli, settings.batch_size or 128), stimuli)


# ---------------------------------------------------------------------------------------- the driver


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Use the running Ray session, join the cluster at `address`, or start a local one (shut down after)."""
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise UserError(f"cannot join the Ray cluster at {address} ({error}); check --address or drop it "
                        "to start a local cluster") from None
    try:
        yield
    finally:
        ray.shutdown()


class ChunkRunner:
    """Runs chunks as Ray tasks, skipping those already on disk and writing each as it finishes."""

    def __init__(self, out_dir: Path, model: VGG, stimuli: Stimuli, settings: SweepSettings, progress: bool):
        self.out_dir = out_dir
        self.settings = settings
        self.progress = progress
        self.model_ref = ray.put(model)
        self.stimuli_ref = ray.put(stimuli)
        self.options = dict(num_cpus=settings.cpus_per_task, num_gpus=settings.gpus_per_task,
                            max_retries=settings.max_retries)

    def intact(self) -> pd.DataFrame:
        """The intact loss and accuracy per task, computed once per output directory."""
        path = self.out_dir / "chunks" / "intact.parquet"
        if not path.exists():
            write_parquet(path, ray.get(run_intact.options(**self.options).remote(
                self.model_ref, self.stimuli_ref, self.settings)))
        return pd.read_parquet(path)

    def run(self, chunks: Sequence[Chunk], description: str) -> pd.DataFrame:
        """All chunks' rows, computing the missing ones in parallel."""
        missing = [chunk for chunk in chunks if not chunk.path(self.out_dir).exists()]
        total = sum(len(chunk.filters) for chunk in chunks)
        done = total - sum(len(chunk.filters) for chunk in missing)
        pending = {run_chunk.options(**self.options).remote(self.model_ref, self.stimuli_ref, chunk, self.settings): chunk
                   for chunk in missing}
        with tqdm(total=total, initial=done, unit="filter", desc=description, disable=not self.progress) as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                chunk = pending.pop(ready[0])
                write_parquet(chunk.path(self.out_dir), ray.get(ready[0]))
                bar.update(len(chunk.filters))
        return pd.concat([pd.read_parquet(chunk.path(self.out_dir)) for chunk in chunks], ignore_index=True)


def oneshot_chunks(model: VGG, settings: SweepSettings) -> list[Chunk]:
    """Every filter of the chosen layers, in chunks."""
    sizes = filters_per_layer(model)
    return [chunk for layer in settings.layers
            for chunk in chunks_of(layer, range(sizes[layer]), settings.filters_per_task)]


def greedy_rankings(runner: ChunkRunner, model: VGG, tasks: Sequence[str], oneshot: pd.DataFrame) -> pd.DataFrame:
    """METHOD's greedy ranking of every (layer, task), round by round; round 0 is the one-shot sweep."""
    settings, sizes = runner.settings, filters_per_layer(model)
    schedules = {layer: GreedySchedule.for_layer(sizes[layer]) for layer in settings.layers}
    rounds = {(layer, task): [oneshot[(oneshot.layer == layer) & (oneshot.task == task)]]
              for layer in settings.layers for task in tasks}
    for round_index in range(1, max(s.rounds for s in schedules.values())):
        chunks = [chunk for (layer, task), done in rounds.items() if schedules[layer].rounds > round_index
                  for chunk in next_round_chunks(layer, task, done, schedules[layer], sizes[layer], round_index, settings)]
        frame = runner.run(chunks, f"greedy round {round_index}")
        for (layer, task), done in rounds.items():
            if schedules[layer].rounds > round_index:
                done.append(frame[(frame.layer == layer) & (frame.task == task)])
    return pd.concat([greedy_ranking(layer, task, done, schedules[layer]) for (layer, task), done in rounds.items()],
                     ignore_index=True)


def next_round_chunks(layer: str, task: str, rounds: Sequence[pd.DataFrame], schedule: GreedySchedule,
                      num_filters: int, round_index: int, settings: SweepSettings) -> list[Chunk]:
    """The chunks of one greedy round for one layer and task: every remaining filter on top of the chosen."""
    chosen = chosen_filters(rounds, schedule)
    remaining = [f for f in range(num_filters) if f not in set(chosen)]
    return chunks_of(layer, remaining, settings.filters_per_task, task=task, round=round_index, base=tuple(chosen))


def resolve_settings(out_dir: Path, settings: SweepSettings, identity: Mapping[str, Any]) -> SweepSettings:
    """Settings for this output directory: those of the sweep already there (when resuming) must match.

    `identity` says what is swept (checkpoint hash, data, images); a directory holding another sweep is an
    error. A memory budget left to default is probed once and then kept.
    """
    config_path = out_dir / "config.json"
    if config_path.exists():
        stored = read_json(config_path)
        stored_settings = stored.get("settings", {})
        for key, value in identity.items():
            if stored.get("identity", {}).get(key) != _jsonable(value):
                raise UserError(f"{out_dir} holds a sweep with another {key} ({stored.get('identity', {}).get(key)}); "
                                "rerun with the same inputs or choose another --out")
        for key in SweepSettings.RESULT_FIELDS:
            requested, kept = _jsonable(getattr(settings, key)), stored_settings.get(key)
            left_to_default = key == "memory_budget" and requested is None
            if requested != kept and not left_to_default:
                raise UserError(f"{out_dir} holds a sweep with {key}={kept}, not {requested}; rerun with the same "
                                "settings or choose another --out")
        return replace(settings, memory_budget=stored_settings["memory_budget"])
    if settings.memory_budget is None:
        settings = replace(settings, memory_budget=ray.get(probe_budget.options(
            num_cpus=settings.cpus_per_task, num_gpus=settings.gpus_per_task).remote(settings)))
    return settings


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def distributed_sweep(model: VGG, images_by_task: ImagesByTask, out_dir: str | os.PathLike,
                      settings: SweepSettings = SweepSettings(), identity: Mapping[str, Any] | None = None,
                      address: str | None = None, progress: bool = True,
                      config_extra: Mapping[str, Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the sweep of `model` (on the CPU) through Ray into `out_dir`; returns (filter_losses, ranking), also
    written there as Parquet.

    Resumes the sweep already in `out_dir`. `identity` (what is swept) and `config_extra` go into config.json.
    """
    out = Path(out_dir)
    stimuli = Stimuli.from_tasks(images_by_task)
    with ray_session(address):
        settings = resolve_settings(out, settings, identity or {})
        write_json(out / "config.json", {**(config_extra or {}), "identity": {k: _jsonable(v) for k, v in (identity or {}).items()},
                                         "settings": {k: _jsonable(v) for k, v in asdict(settings).items()}})
        runner = ChunkRunner(out, model, stimuli, settings, progress)
        intact = runner.intact()
        lesions = runner.run(oneshot_chunks(model, settings), "one-shot lesions")
        filter_losses = with_intact(lesions, intact)
        ranking = (greedy_rankings(runner, model, stimuli.tasks, lesions) if settings.ranking == "greedy"
                   else oneshot_ranking(filter_losses))
    write_parquet(out / "filter_losses.parquet", filter_losses)
    write_parquet(out / "ranking.parquet", ranking)
    return filter_losses, ranking


# ------------------------------------------------------------------------------- checkpoint and data


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: its tables and where they were written."""

    filter_losses: pd.DataFrame
    ranking: pd.DataFrame
    out_dir: Path


def training_images(loaded: Any, data_dir: str | os.PathLike, images_per_task: int, seed: int) -> ImagesByTask:
    """Per task the model was trained on: a seeded set of training-split images, labels in its output space."""
    from data_pipeline.dataset import DataDir
    from data_pipeline.sample import sample_images

    data = DataDir(data_dir)
    for task, classes in zip(loaded.layout.tasks, loaded.layout.classes):
        if task not in data.task_names:
            raise UserError(f"data {data.path} lacks task {task!r}, which the model was trained on "
                            f"(it has {', '.join(data.task_names)}); pass the data directory the model was trained on")
        if tuple(data.classes(task)) != tuple(classes):
            raise UserError(f"task {task!r} in {data.path} has other classes than the model was trained on; "
                            "pass the data directory the model was trained on")
    resolution = int(loaded.config["data"]["resolution"])
    images = {}
    for task in loaded.layout.tasks:
        try:
            images[task] = sample_images(data, task, "train", images_per_task, seed, resolution, layout=loaded.layout)
        except UserError as error:
            raise UserError(f"--images-per-task {images_per_task} for task {task}: {error}") from None
    return images


def run_sweep(checkpoint: str | os.PathLike, data_dir: str | os.PathLike, out_dir: str | os.PathLike,
              images_per_task: int = 6400, seed: int = 0, settings: SweepSettings = SweepSettings(),
              address: str | None = None, progress: bool = True) -> SweepResult:
    """The lesion sweep of a trained checkpoint on its data: writes filter_losses.parquet, ranking.parquet,
    config.json and manifest.json into `out_dir`, resuming a sweep already there."""
    from lightning_modules import load_model

    if images_per_task < 1:
        raise UserError(f"--images-per-task must be at least 1, not {images_per_task}")
    loaded = load_model(checkpoint)
    images = training_images(loaded, data_dir, images_per_task, seed)
    identity = {"checkpoint_sha256": loaded.sha256, "data": str(Path(data_dir).resolve()),
                "images_per_task": images_per_task, "seed": seed, "tasks": list(loaded.layout.tasks)}
    arguments = {"checkpoint": str(Path(checkpoint).resolve()), "out": str(Path(out_dir).resolve()), "address": address}
    filter_losses, ranking = distributed_sweep(loaded.model, images, out_dir, settings, identity, address, progress,
                                               config_extra=arguments)
    write_manifest(Path(out_dir) / "manifest.json", "lesion_sweep", checkpoint=arguments["checkpoint"],
                   checkpoint_sha256=loaded.sha256, data=identity["data"], images_per_task=images_per_task,
                   seeds={"images": seed}, tasks=identity["tasks"], layers=list(settings.layers),
                   ranking=settings.ranking, images_split="train", transform="eval",
                   resolution=int(loaded.config["data"]["resolution"]))
    return SweepResult(filter_losses, ranking, Path(out_dir))
