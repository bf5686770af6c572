"""The segregation analysis of a lesion sweep: top-fraction lesions, per-image predictions, indices with CIs, figures.

`run_segregation(sweep_dir, out_dir, ...)` reads the sweep (its checkpoint, data and ranking.parquet), and for
every swept layer and every task T lesions the top fraction of the layer's filters in T's ranking, then
classifies the full test split of every task (Ray tasks per (layer, T), resumable). Each unit streams the
test .beton files in batches of --batch-size (file order, eval transform), so memory does not grow with the
test set; only per-image predictions are kept. From the per-image
predictions it computes accuracies, normalised performance, proportional drops d(X|Y) and the segregation
index of every pair of tasks, each with a hierarchical-bootstrap 95% interval (`analysis.segregation.indices`).

Accuracy is the network's top-1 answer (scope "all_outputs", used by the summary and figures): over all outputs
(METHOD's measure) for a shared output layer, over the outputs of the image's own head for `model.heads: separate`,
which is how such a network answers. The tables also hold every quantity for top-1 restricted to the analysed
task's own outputs (scope "task_outputs").

Output directory:
  units/<layer>__<task>.parquet   finished units (resume skips them)
  predictions.parquet             per image: layer, lesioned_task, fraction, eval_task, image, class, label,
                                  prediction, correct (+ prediction_within_task, correct_within_task);
                                  the intact network has layer "intact", lesioned_task "none", fraction 0
  accuracy.parquet, drops.parquet, segregation.parquet   the tables (per layer, task pair, fraction, scope)
  tasks.parquet                   the classes of each analysed task (the pseudo-tasks of --random-tasks)
  pseudo_sweep/                   --random-tasks: the sweep that ranks filters for the pseudo-tasks
  summary.json, figures/*.png|svg, config.json, manifest.json
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import figures
from analysis.segregation.indices import INTACT_LAYER, segregation_tables
from analysis.segregation.lesion_eval import INTACT_UNIT, BetonSource, EvalSet, Unit, evaluate_with_ray, lesion_plan
from analysis.segregation.settings import DEFAULT_SCOPE, SCOPES, SegregationSettings
from analysis.segregation.task_groups import (
    Grouping,
    eval_sets,
    grouping_table,
    label_space_grouping,
    random_grouping,
    regroup,
)
from common.errors import UserError
from common.io import file_sha256, read_json, readable_parquet, write_json, write_parquet
from common.ray_runner import Resources
from common.stage import StageDir
from common.wandb_runs import StageLog, model_artifact, table_artifact
from lightning_modules.layer_names import CONV_LAYERS

TABLES = ("accuracy", "drops", "segregation")
# the segregation artifact (W&B): the index first (it names the artifact), the tables behind it and the summary
SEGREGATION_FILES = ("segregation.parquet", "accuracy.parquet", "drops.parquet", "tasks.parquet", "summary.json")


@dataclass(frozen=True)
class Sweep:
    """What the analysis needs from a sweep directory."""

    path: Path
    manifest: dict[str, Any]
    config: dict[str, Any]
    ranking: pd.DataFrame

    @property
    def layers(self) -> list[str]:
        """The swept conv layers, in network order."""
        swept = set(self.ranking["layer"])
        return [layer for layer in CONV_LAYERS if layer in swept]


def read_sweep(sweep_dir: str | os.PathLike) -> Sweep:
    """Read a `specialize lesion` output directory; UserError when it is not a finished sweep."""
    path = Path(sweep_dir)
    missing = [name for name in ("manifest.json", "config.json") if not (path / name).is_file()]
    if not readable_parquet(path / "ranking.parquet"):
        missing.append("a readable ranking.parquet")
    if missing:
        raise UserError(
            f"{path} is not a finished lesion sweep (missing {', '.join(missing)}); "
            "run `specialize lesion` first or pass its --out directory"
        )
    return Sweep(
        path,
        read_json(path / "manifest.json"),
        read_json(path / "config.json"),
        pd.read_parquet(path / "ranking.parquet"),
    )


def pseudo_task_ranking(
    loaded: Any, sweep: Sweep, data_dir: str, grouping: Grouping, out: Path, resources: Resources
) -> pd.DataFrame:
    """Rank filters for the pseudo-tasks with the sweep engine, on the sweep's training images regrouped.

    Same images (seeded sample per real task), same ranking method and layers as the original sweep;
    resumable in `out`.
    """
    from sweeps.distributed import distributed_sweep, training_images
    from sweeps.settings import SweepSettings

    settings = SweepSettings(
        images_per_task=int(sweep.manifest["images_per_task"]),
        seed=int(sweep.manifest["seeds"]["images"]),
        layers=tuple(sweep.layers),
        ranking=sweep.manifest.get("ranking", "oneshot"),
        resources=resources,
    )
    images = training_images(loaded, data_dir, settings.images_per_task, settings.seed)
    identity = {
        "checkpoint_sha256": loaded.sha256,
        "data": data_dir,
        "source_sweep": str(sweep.path.resolve()),
        "grouping": {task: [int(label) for label in labels] for task, labels in grouping.items()},
    }
    _, ranking = distributed_sweep(
        loaded.model, regroup(images, grouping), out, settings, identity, heads=loaded.output_heads
    )
    return ranking


def beton_sources(loaded: Any, data_dir: str) -> dict[str, BetonSource]:
    """Every task's test .beton, to be streamed in file order with the eval transform and global labels."""
    from data_pipeline.data_dir import DataDir

    data, resolution = DataDir(data_dir), loaded.config.data.resolution
    return {
        task: BetonSource(str(data.beton(task, "test")), loaded.label_space.offset(task), resolution)
        for task in loaded.label_space.tasks
    }


def analysis_units(layers: Sequence[str], tasks: Sequence[str]) -> list[Unit]:
    """The intact network, then every (layer, lesioned task)."""
    return [INTACT_UNIT] + [Unit(layer, task) for layer in layers for task in tasks]


def summarise(
    tables: dict[str, pd.DataFrame], tasks: Sequence[str], settings: SegregationSettings, layers: Sequence[str]
) -> dict[str, Any]:
    """The JSON summary: intact accuracies and the segregation index per layer and pair at the headline fraction."""
    accuracy, segregation = tables["accuracy"], tables["segregation"]
    intact = accuracy[accuracy["layer"] == INTACT_LAYER]
    headline = segregation[segregation["fraction"] == settings.fraction]
    return {
        "tasks": list(tasks),
        "random_tasks": settings.random_tasks,
        "fraction": settings.fraction,
        "fractions": settings.all_fractions,
        "rounding": settings.rounding,
        "layers": list(layers),
        "default_scope": DEFAULT_SCOPE,
        "confidence_level": settings.level,
        "n_bootstraps": settings.n_bootstraps,
        "intact_accuracy": {
            scope: {row.eval_task: _interval(row, "accuracy") for row in intact[intact["scope"] == scope].itertuples()}
            for scope in SCOPES
        },
        "segregation_index": {
            scope: {
                f"{a}+{b}": [{"layer": row.layer, **_interval(row, "si")} for row in pair.itertuples()]
                for (a, b), pair in headline[headline["scope"] == scope].groupby(["task_a", "task_b"], sort=False)
            }
            for scope in SCOPES
        },
    }


def _interval(row: Any, name: str) -> dict[str, float]:
    return {
        name: float(getattr(row, name)),
        "low": float(getattr(row, f"{name}_low")),
        "high": float(getattr(row, f"{name}_high")),
    }


def headline_rows(table: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """The rows of one fraction in the default scope."""
    return table[(table["fraction"] == fraction) & (table["scope"] == DEFAULT_SCOPE)]


def draw_figures(
    tables: dict[str, pd.DataFrame], out: Path, settings: SegregationSettings, layers: Sequence[str], label: str
) -> dict[str, Path]:
    """The three figures of one analysis at the headline fraction and default scope; name -> PNG path."""
    directory = out / "figures"
    segregation, drops = (headline_rows(tables[name], settings.fraction) for name in ("segregation", "drops"))
    curves = {f"{label}: {a} vs {b}": pair for (a, b), pair in segregation.groupby(["task_a", "task_b"], sort=False)}
    layer = settings.figure_layer or layers[-1]
    paths = {
        "segregation_by_layer": figures.plot_segregation_by_layer(curves, directory / "segregation_by_layer"),
        "normalised_performance": figures.plot_normalised_performance(
            drops, layer, directory / f"normalised_performance_{layer}"
        ),
        "drop_heatmap": figures.plot_drop_heatmap(drops, directory / "drop_heatmap"),
    }
    return {name: written[0] for name, written in paths.items()}


def run_segregation(
    sweep_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    settings: SegregationSettings = SegregationSettings(),
    address: str | None = None,
) -> dict[str, Any]:
    """The whole analysis of one sweep into `out_dir` (see the module docstring); returns the summary.

    An analysis already finished in `out_dir` (same inputs) is not redone. Inside `common.wandb_runs.logging_to` (or
    an active W&B run) the figures, tables and the index of every layer also go to W&B, with the sweep and checkpoint
    it used and the tables it made as artifacts.
    """
    from common.ray_runner import ray_session
    from lightning_modules.checkpoint import load_model
    from sweeps.distributed import sweep_artifact

    sweep = read_sweep(sweep_dir)
    data = str(Path(data_dir or sweep.manifest["data"]).resolve())
    loaded = load_model(sweep.manifest["checkpoint"])
    if loaded.sha256 != sweep.manifest.get("checkpoint_sha256", loaded.sha256):
        raise UserError(f"checkpoint {loaded.checkpoint} changed since the sweep in {sweep.path}; rerun the sweep")
    stage = StageDir(
        Path(out_dir),
        "segregation analysis",
        {
            "checkpoint_sha256": loaded.sha256,
            "ranking_sha256": file_sha256(sweep.path / "ranking.parquet"),
            "data": data,
            **settings.result_fields(),
        },
    ).check()
    if stage.finished:
        return read_json(stage.path / "summary.json")
    out = stage.start(
        {
            "sweep": str(sweep.path.resolve()),
            "out": str(stage.path.resolve()),
            "address": address,
            **asdict(settings),
        }
    )
    with ray_session(address):
        if settings.random_tasks:
            grouping = random_grouping(loaded.label_space, settings.seed)
            ranking = pseudo_task_ranking(loaded, sweep, data, grouping, out / "pseudo_sweep", settings.resources)
        else:
            grouping, ranking = label_space_grouping(loaded.label_space), sweep.ranking
        sets: list[EvalSet] = eval_sets(beton_sources(loaded, data), grouping, loaded.label_space)
        plan = lesion_plan(
            ranking, analysis_units(sweep.layers, list(grouping)), settings.all_fractions, settings.rounding
        )
        predictions = evaluate_with_ray(
            loaded.model, sets, plan, out / "units", settings.resources, settings.batch_size, loaded.output_heads
        )
    write_parquet(out / "predictions.parquet", predictions)
    write_parquet(out / "tasks.parquet", grouping_table(grouping, loaded.label_space))
    tables = segregation_tables(predictions, list(grouping), settings.n_bootstraps, settings.seed, settings.level)
    for name in TABLES:
        write_parquet(out / f"{name}.parquet", tables[name])
    summary = summarise(tables, list(grouping), settings, sweep.layers)
    write_json(out / "summary.json", summary)
    pngs = draw_figures(
        tables, out, settings, sweep.layers, label="random tasks" if settings.random_tasks else "network"
    )
    stage.finish(
        "segregation",
        StageLog(
            summary_scalars(summary),
            tables,
            pngs,
            uses=[sweep_artifact(sweep.path), model_artifact(loaded.checkpoint, loaded.sha256)],
            makes=[table_artifact("segregation", out, SEGREGATION_FILES)],
        ),
        sweep=str(sweep.path.resolve()),
        checkpoint=str(loaded.checkpoint),
        checkpoint_sha256=loaded.sha256,
        data=data,
        seeds={
            "bootstrap": settings.seed,
            "test_images": settings.seed,
            "random_tasks": settings.seed if settings.random_tasks else None,
        },
        tasks=list(grouping),
        heads=loaded.config.model.heads,
        n_bootstraps=settings.n_bootstraps,
        fractions=settings.all_fractions,
    )
    return summary


def summary_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """The segregation index of every layer and pair at the headline fraction (default scope), as W&B summary keys
    `si/<pair>/<layer>`."""
    rows = summary["segregation_index"][summary["default_scope"]]
    return {f"si/{pair}/{row['layer']}": row["si"] for pair, layers in rows.items() for row in layers}


def segregation_curves(
    inputs: Sequence[str], fraction: float | None = None, scope: str = DEFAULT_SCOPE
) -> dict[str, pd.DataFrame]:
    """Curves for `figures.plot_segregation_by_layer` from several analyses given as 'DIR' or 'DIR=LABEL'.

    One curve per analysis and task pair, at `fraction` (default: each analysis' headline fraction).
    """
    curves: dict[str, pd.DataFrame] = {}
    for spec in inputs:
        directory, _, label = spec.partition("=")
        path = Path(directory)
        if not (path / "segregation.parquet").is_file() or not (path / "summary.json").is_file():
            raise UserError(f"{path} is not a finished segregation analysis; pass an --out of `specialize segregation`")
        chosen = fraction if fraction is not None else read_json(path / "summary.json")["fraction"]
        table = pd.read_parquet(path / "segregation.parquet")
        rows = table[(table["fraction"] == chosen) & (table["scope"] == scope)]
        if rows.empty:
            raise UserError(
                f"{path} has no segregation index at fraction {chosen}; choose one of {sorted(set(table['fraction']))}"
            )
        for (task_a, task_b), pair in rows.groupby(["task_a", "task_b"], sort=False):
            curves[f"{label or path.name}: {task_a} vs {task_b}"] = pair
    return curves
