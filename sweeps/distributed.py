"""The lesion sweep fanned out with Ray: (layer, chunk of filters) tasks, resumable, with greedy ranking.

The model and the images (uint8, a quarter of float32) go into the Ray object store once; the workers of a node
share the images there (zero-copy) rather than each holding a copy. Each task runs the lesion engine on one chunk
of one layer's filters and asks for GPUs (fractions allowed) or CPUs. The driver writes each finished chunk
atomically under OUT/chunks/, so running the same sweep again skips finished chunks; Ray retries a task whose
worker died. Chunks, pass sizes and the memory budget are fixed once per output directory (config.json), so
the results do not depend on the number of workers. A chunk holds per-class sums (`sweeps.class_totals`); the
whole table is written as class_losses.parquet and class_intact.parquet, and the per-task losses of
filter_losses.parquet are sums over it.

Greedy ranking runs in rounds after the one-shot sweep (its round 0): in round r every not-yet-chosen filter
of each (layer, task) is lesioned together with the chosen ones, on that task's images; rounds are parallel
inside and resumable between. The per-class table ranks other groupings of the classes one-shot only; their greedy
rankings need rounds of their own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from torch import nn

from common.errors import UserError
from common.io import read_json, write_parquet
from common.ray_runner import Resources, WorkUnit, ray_session, run_units, worker_device
from common.stage import StageDir
from common.wandb_runs import ArtifactFiles, StageLog, data_artifact, model_artifact, table_artifact
from lightning_modules.heads import OutputHeads
from lightning_modules.units import filters_per_unit
from sweeps.class_totals import ClassTotals, Grouping
from sweeps.devices import on_device, tf32
from sweeps.engine import class_rows, intact_rows, intact_sums, sweep_layer
from sweeps.memory_plan import DEFAULT_BATCH_SIZE, default_budget, layer_plan
from sweeps.ranking import GreedySchedule, chosen_filters, greedy_ranking, oneshot_ranking
from sweeps.settings import SweepSettings
from sweeps.stimuli import ImagesByTask, Stimuli

# What a chunk file holds, recorded in config.json: chunks of unfinished sweeps written before (per-task rows) are
# refused rather than mixed in.
CHUNK_FORMAT = "per-class sums"


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
        return (
            out_dir
            / "chunks"
            / "greedy"
            / f"round_{self.round:02d}"
            / self.task
            / f"{self.layer}_{self.part:04d}.parquet"
        )


def chunks_of(layer: str, candidates: Sequence[int], size: int, **fields: Any) -> list[Chunk]:
    """`candidates` of `layer` cut into chunks of `size` filters."""
    return [
        Chunk(layer, part, tuple(candidates[start : start + size]), **fields)
        for part, start in enumerate(range(0, len(candidates), size))
    ]


# ------------------------------------------------------------------------------------------ Ray tasks


@ray.remote
def probe_budget(gpus: float) -> int:
    """Half the free memory of the device a task asking for `gpus` gets (scaled by its GPU fraction)."""
    device = worker_device()
    share = min(1.0, gpus) if device.type == "cuda" else 1.0
    return int(default_budget(device) * share)


def task_budget(resources: Resources) -> int:
    """The default memory budget of a Ray task with `resources`: half the free memory of the device it gets."""
    return ray.get(probe_budget.options(num_cpus=resources.cpus, num_gpus=resources.gpus).remote(resources.gpus))


def run_chunk(
    model: nn.Module, stimuli: Stimuli, chunk: Chunk, settings: SweepSettings, heads: OutputHeads
) -> pd.DataFrame:
    """Per-class rows (layer, filter, label, loss_sum, correct) of one chunk (a Ray task)."""
    images = stimuli.only(chunk.task) if chunk.task else stimuli
    with on_device(model, worker_device()) as (net, _), tf32(settings.allow_tf32):
        plan = layer_plan(
            net,
            chunk.layer,
            len(images.labels),
            len(chunk.filters),
            settings.batch_size,
            settings.lesions_per_pass,
            settings.memory_budget,
            images.images.shape[1:],
        )
        sums = sweep_layer(net, chunk.layer, chunk.filters, images, plan, base=chunk.base, heads=heads)
    return class_rows(chunk.layer, chunk.filters, sums, tuple(filters_per_unit(model)))


def run_intact(model: nn.Module, stimuli: Stimuli, settings: SweepSettings, heads: OutputHeads) -> pd.DataFrame:
    """Per-class rows (label, images, loss_sum, correct) of the unlesioned model (a Ray task)."""
    with on_device(model, worker_device()) as (net, _), tf32(settings.allow_tf32):
        return intact_rows(intact_sums(net, stimuli, settings.batch_size or DEFAULT_BATCH_SIZE, heads), stimuli)


# ---------------------------------------------------------------------------------------- the driver


class ChunkRunner:
    """Runs a sweep's chunks through the Ray runner: the model and images go into the object store once."""

    def __init__(
        self,
        out_dir: Path,
        model: nn.Module,
        stimuli: Stimuli,
        settings: SweepSettings,
        progress: bool,
        heads: OutputHeads,
    ):
        self.out_dir = out_dir
        self.settings = settings
        self.progress = progress
        self.heads = heads
        self.model_ref = ray.put(model)
        self.stimuli_ref = ray.put(stimuli)

    def intact(self) -> pd.DataFrame:
        """The intact network's per-class sums, computed once per output directory."""
        path = self.out_dir / "chunks" / "intact.parquet"
        run_units(
            run_intact,
            [WorkUnit(path, (self.model_ref, self.stimuli_ref, self.settings, self.heads))],
            self.settings.resources,
            "intact network",
            progress=False,
        )
        return pd.read_parquet(path)

    def run(self, chunks: Sequence[Chunk], description: str) -> list[pd.DataFrame]:
        """Each chunk's per-class rows, computing the missing ones in parallel."""
        units = [
            WorkUnit(
                chunk.path(self.out_dir),
                (self.model_ref, self.stimuli_ref, chunk, self.settings, self.heads),
                size=len(chunk.filters),
            )
            for chunk in chunks
        ]
        run_units(run_chunk, units, self.settings.resources, description, self.progress, unit_name="filter")
        return [pd.read_parquet(unit.path) for unit in units]


def chunk_task_losses(
    chunks: Sequence[Chunk], frames: Sequence[pd.DataFrame], intact: pd.DataFrame, grouping: Grouping
) -> pd.DataFrame:
    """Per-task loss rows (`ClassTotals.task_losses`) of chunks from their per-class rows: every task of `grouping`
    for a one-shot chunk, its own task for a greedy one (whose images are that task's alone)."""
    return pd.concat(
        [
            ClassTotals.from_frames(frame, intact).task_losses(
                grouping if chunk.task is None else {chunk.task: grouping[chunk.task]}
            )
            for chunk, frame in zip(chunks, frames)
        ],
        ignore_index=True,
    )


def oneshot_chunks(model: nn.Module, settings: SweepSettings) -> list[Chunk]:
    """Every filter of the chosen layers, in chunks."""
    sizes = filters_per_unit(model)
    return [
        chunk for layer in settings.layers for chunk in chunks_of(layer, range(sizes[layer]), settings.filters_per_task)
    ]


def greedy_rankings(
    runner: ChunkRunner, model: nn.Module, grouping: Grouping, intact: pd.DataFrame, oneshot: pd.DataFrame
) -> pd.DataFrame:
    """METHOD's greedy ranking of every (layer, task of `grouping`), round by round; round 0 is the one-shot sweep.

    Each round lesions filters on top of those chosen for one task: another grouping of the classes needs rounds of
    its own (the per-class table gives its round 0 only)."""
    settings, sizes, tasks = runner.settings, filters_per_unit(model), list(grouping)
    schedules = {
        layer: GreedySchedule.for_layer(sizes[layer], target_fraction=settings.greedy_target)
        for layer in settings.layers
    }
    rounds = {
        (layer, task): [oneshot[(oneshot.layer == layer) & (oneshot.task == task)]]
        for layer in settings.layers
        for task in tasks
    }
    for round_index in range(1, max(s.rounds for s in schedules.values())):
        chunks = [
            chunk
            for (layer, task), done in rounds.items()
            if schedules[layer].rounds > round_index
            for chunk in next_round_chunks(layer, task, done, schedules[layer], sizes[layer], round_index, settings)
        ]
        frame = chunk_task_losses(chunks, runner.run(chunks, f"greedy round {round_index}"), intact, grouping)
        for (layer, task), done in rounds.items():
            if schedules[layer].rounds > round_index:
                done.append(frame[(frame.layer == layer) & (frame.task == task)])
    return pd.concat(
        [
            greedy_ranking(layer, task, done, schedules[layer], int(done[0]["layer_index"].iloc[0]))
            for (layer, task), done in rounds.items()
        ],
        ignore_index=True,
    )


def next_round_chunks(
    layer: str,
    task: str,
    rounds: Sequence[pd.DataFrame],
    schedule: GreedySchedule,
    num_filters: int,
    round_index: int,
    settings: SweepSettings,
) -> list[Chunk]:
    """The chunks of one greedy round for one layer and task: every remaining filter on top of the chosen."""
    chosen = chosen_filters(rounds, schedule)
    remaining = [f for f in range(num_filters) if f not in set(chosen)]
    return chunks_of(layer, remaining, settings.filters_per_task, task=task, round=round_index, base=tuple(chosen))


def with_recorded_budget(out_dir: str | os.PathLike, settings: SweepSettings) -> SweepSettings:
    """`settings`, with the memory budget of the sweep already in `out_dir` when it is left to default: the budget
    probed when the sweep began is kept, so its passes do not depend on what memory is free now."""
    recorded = StageDir(Path(out_dir), "lesion sweep", {}).recorded()
    if settings.memory_budget is not None or recorded is None:
        return settings
    return replace(settings, memory_budget=recorded["settings"]["memory_budget"])


def sweep_stage(out_dir: str | os.PathLike, identity: Mapping[str, Any], settings: SweepSettings) -> StageDir:
    """The sweep's stage directory, checked: what is swept (`identity`: checkpoint hash, data, tasks, ...) and the
    settings that change the numbers."""
    return StageDir(Path(out_dir), "lesion sweep", {**identity, **settings.result_fields()}).check()


def probed_settings(settings: SweepSettings) -> SweepSettings:
    """`settings` with a memory budget: half the free memory a sweep task sees, when none is given."""
    if settings.memory_budget is not None:
        return settings
    return replace(settings, memory_budget=task_budget(settings.resources))


def sweep_tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A finished sweep's (filter_losses, ranking)."""
    return pd.read_parquet(out / "filter_losses.parquet"), pd.read_parquet(out / "ranking.parquet")


def check_chunk_format(out_dir: Path) -> None:
    """UserError when `out_dir` holds chunks of an unfinished sweep written before chunks held per-class sums."""
    config = out_dir / "config.json"
    if not config.is_file() or read_json(config).get("chunks") == CHUNK_FORMAT:
        return
    if any((out_dir / "chunks").rglob("*.parquet")):
        raise UserError(
            f"{out_dir} holds an unfinished lesion sweep from an older version whose chunks lack per-class sums; "
            f"delete {out_dir / 'chunks'} to redo it, or choose another --out"
        )


def distributed_sweep(
    model: nn.Module,
    images_by_task: ImagesByTask,
    out_dir: str | os.PathLike,
    settings: SweepSettings = SweepSettings(),
    identity: Mapping[str, Any] | None = None,
    address: str | None = None,
    progress: bool = True,
    arguments: Mapping[str, Any] | None = None,
    heads: OutputHeads = OutputHeads(),
    manifest: Mapping[str, Any] | None = None,
    uses: Sequence[ArtifactFiles] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the sweep of `model` (on the CPU) through Ray into `out_dir`; returns (filter_losses, ranking), also
    written there as Parquet.

    Resumes the sweep already in `out_dir`, and returns a finished one's tables without redoing anything.
    `identity` (what is swept; with separate `heads`, also their sizes, so a sweep scored otherwise is never resumed
    into this one) and `arguments` go into config.json, `manifest` into manifest.json. The per-class table goes into
    class_losses.parquet and class_intact.parquet (`sweeps.class_totals`; sweeps finished before it was recorded have
    none). With `uses` (the artifacts it used), the sweep logs its W&B run (`common.wandb_runs`).
    """
    identity = {**(identity or {}), **({} if heads.shared else {"heads": list(heads.sizes)})}
    settings = with_recorded_budget(out_dir, settings.for_units(tuple(filters_per_unit(model))))
    stage = sweep_stage(out_dir, identity, settings)
    if stage.finished:
        return sweep_tables(stage.path)
    stimuli = Stimuli.from_tasks(images_by_task)
    with ray_session(address):
        settings = probed_settings(settings)
        check_chunk_format(Path(out_dir))
        out = sweep_stage(out_dir, identity, settings).start(
            {**(arguments or {}), "settings": asdict(settings), "chunks": CHUNK_FORMAT}
        )
        runner = ChunkRunner(out, model, stimuli, settings, progress, heads)
        intact = runner.intact()
        classes = ClassTotals.from_frames(
            pd.concat(runner.run(oneshot_chunks(model, settings), "one-shot lesions"), ignore_index=True), intact
        )
        grouping = stimuli.grouping()
        filter_losses = classes.task_losses(grouping)
        ranking = (
            greedy_rankings(runner, model, grouping, intact, filter_losses)
            if settings.ranking == "greedy"
            else oneshot_ranking(filter_losses)
        )
    for name, frame in zip(("class_losses", "class_intact"), classes.frames()):
        write_parquet(out / f"{name}.parquet", frame)
    write_parquet(out / "filter_losses.parquet", filter_losses)
    write_parquet(out / "ranking.parquet", ranking)
    log = None
    if uses is not None:
        log = StageLog(intact_scalars(filter_losses), {"ranking": ranking}, uses=uses, makes=[sweep_artifact(out)])
    greedy = {"greedy_target": settings.greedy_target} if settings.ranking == "greedy" else {}
    stage.finish(
        "lesion_sweep", log, **(manifest or {}), layers=list(settings.layers), ranking=settings.ranking, **greedy
    )
    return filter_losses, ranking


def sweep_artifact(out_dir: str | os.PathLike) -> ArtifactFiles:
    """A finished sweep's tables as the W&B `sweep` artifact (defined by its ranking)."""
    return table_artifact("sweep", out_dir, ["ranking.parquet", "filter_losses.parquet"])


def intact_scalars(filter_losses: pd.DataFrame) -> dict[str, float]:
    """The intact network's loss and accuracy per task on the sweep's images, as W&B summary keys."""
    intact = filter_losses.drop_duplicates("task")
    return {
        **{f"intact/{row.task}/loss": float(row.intact_loss) for row in intact.itertuples()},
        **{f"intact/{row.task}/accuracy": float(row.intact_accuracy) for row in intact.itertuples()},
    }


# ------------------------------------------------------------------------------- checkpoint and data


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: its tables and where they were written."""

    filter_losses: pd.DataFrame
    ranking: pd.DataFrame
    out_dir: Path


def training_images(loaded: Any, data_dir: str | os.PathLike, images_per_task: int, seed: int) -> ImagesByTask:
    """Per task the model was trained on: a seeded set of training-split images (uint8 centre crops, normalised
    batch by batch on the workers), labels in its output space."""
    from data_pipeline.data_dir import DataDir
    from data_pipeline.sample import sample_images

    data = DataDir(data_dir)
    data.check_serves(loaded.label_space)
    resolution = loaded.config.data.resolution
    images = {}
    for task in loaded.label_space.tasks:
        try:
            images[task] = sample_images(
                data, task, "train", images_per_task, seed, resolution, label_space=loaded.label_space, normalise=False
            )
        except UserError as error:
            raise UserError(f"--images-per-task {images_per_task} for task {task}: {error}") from None
    return images


def run_sweep(
    checkpoint: str | os.PathLike,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: SweepSettings = SweepSettings(),
    address: str | None = None,
    progress: bool = True,
) -> SweepResult:
    """The lesion sweep of a trained checkpoint on its data: writes filter_losses.parquet, ranking.parquet, the
    per-class table (class_losses.parquet, class_intact.parquet), config.json and manifest.json into `out_dir`,
    resuming a sweep already there and returning a finished one."""
    from lightning_modules.checkpoint import load_model

    loaded = load_model(checkpoint)
    settings = settings.for_units(tuple(filters_per_unit(loaded.model)))
    data = str(Path(data_dir).resolve())
    identity = {"checkpoint_sha256": loaded.sha256, "data": data, "tasks": list(loaded.label_space.tasks)}
    stage = sweep_stage(out_dir, identity, with_recorded_budget(out_dir, settings))
    if stage.finished:
        return SweepResult(*sweep_tables(stage.path), stage.path)
    filter_losses, ranking = distributed_sweep(
        loaded.model,
        training_images(loaded, data_dir, settings.images_per_task, settings.seed),
        out_dir,
        settings,
        identity,
        address,
        progress,
        arguments={"checkpoint": str(Path(checkpoint).resolve()), "out": str(stage.path.resolve()), "address": address},
        heads=loaded.output_heads,
        manifest={
            "checkpoint": str(Path(checkpoint).resolve()),
            "checkpoint_sha256": loaded.sha256,
            "data": data,
            "images_per_task": settings.images_per_task,
            "seeds": {"images": settings.seed},
            "tasks": identity["tasks"],
            "images_split": "train",
            "transform": "eval",
            "resolution": loaded.config.data.resolution,
            "heads": loaded.config.model.heads,
        },
        uses=[model_artifact(checkpoint, loaded.sha256), data_artifact(data)],
    )
    return SweepResult(filter_losses, ranking, stage.path)
