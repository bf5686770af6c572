"""The segregation analysis of a lesion sweep: top-fraction lesions, per-image predictions, indices with CIs, figures.

`run_segregation(sweep_dir, out_dir, ...)` reads the sweep (its checkpoint, data, ranking.parquet and per-class
table), and for every swept layer and every task T lesions the top fraction of the layer's filters in T's ranking,
then classifies the full test split of every task. The evaluation engine answers every condition (all layers,
lesioned tasks and fractions) from one pass of the intact network per batch of test images; on Ray, a unit of work is
a slice of the test images with all its conditions (`analysis.segregation.lesion_eval`: resumable, each image read
and decoded once in the whole run), and only per-image predictions are kept. From them it computes accuracies,
normalised performance, proportional drops d(X|Y) and the segregation index of every pair of tasks, each with a
hierarchical-bootstrap 95% interval (`analysis.segregation.indices`).

The permutation null (`--null-partitions P`, `--partition sizes|halves`): P random partitions of the classes into
pseudo-tasks (partition i seeded by the network's training seed and i), each ranked and lesioned like the real tasks,
as more analyses of the same engine pass; only each partition's point indices are kept. The random-task control
(`--random-tasks`) analyses partition 1 as the tasks, with every table. Pseudo-tasks are ranked from the sweep's
per-class table, with no second sweep: the ranking a sweep of the same training images regrouped into the
pseudo-tasks gives. A greedy sweep's pseudo-tasks still need greedy rounds of their own (each round lesions filters
on top of those already chosen for one pseudo-task); they run on the regrouped images, resumable in pseudo_greedy/
(the control) and null_greedy/<i>/ (partition i).

Accuracy is the network's top-1 answer (scope "all_outputs", used by the summary and figures): over all outputs
(METHOD's measure) for a shared output layer, over the outputs of the image's own head for `model.heads: separate`,
which is how such a network answers. The tables also hold every quantity for top-1 restricted to the analysed
task's own outputs (scope "task_outputs").

Output directory:
  units/<task>_<first image>.parquet   answers of a finished slice of the test images (resume skips them)
  predictions.parquet             per image: layer, lesioned_task, fraction, eval_task, image, class, label,
                                  prediction, correct (+ prediction_within_task, correct_within_task);
                                  the intact network has layer "intact", lesioned_task "none", fraction 0
  accuracy.parquet, drops.parquet, segregation.parquet   the tables (per layer, task pair, fraction, scope);
                                  with --null-partitions P, segregation.parquet also holds the null's mean, 95%
                                  band and permutation p-value per row (`analysis.segregation.null`)
  null.parquet                    --null-partitions: every partition's index (pairs named by the real tasks)
  fraction_curve.parquet          several fractions: the index per layer, pair, scope and fraction beside the area
                                  of the layer's curve over all fractions, with its interval (and its null, p-value)
  null_fraction_curve.parquet     --null-partitions with several fractions: every partition's curve area
  null_greedy/<i>/                --null-partitions of a greedy sweep: partition i's greedy rounds
  reliability.parquet, overlap.parquet   per layer (and task or pair) at the headline fraction: the split-half
                                  reliability of each task's top set and the overlap of two tasks' top sets, beside
                                  chance (`analysis.segregation.reliability`)
  tasks.parquet                   the classes of each analysed task (the pseudo-tasks of --random-tasks)
  ranking.parquet                 the filter ranking of the analysed tasks (the sweep's, or the pseudo-tasks')
  pseudo_greedy/                  --random-tasks of a greedy sweep: the pseudo-tasks' greedy rounds
  summary.json, figures/*.png|svg, config.json (with the memory budget of the evaluation), manifest.json
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
from analysis.segregation.lesion_eval import (
    INTACT_UNIT,
    Analysis,
    BetonSource,
    Unit,
    answer_with_ray,
    class_names,
    image_slices,
    iter_analysis_predictions,
    lesion_plan,
)
from analysis.segregation.null import AREA_KEYS, area_with_null, null_table, partition_indices, with_null
from analysis.segregation.reliability import ranking_checks
from analysis.segregation.settings import DEFAULT_SCOPE, SCOPES, SegregationSettings
from analysis.segregation.task_groups import Grouping, grouping_table, label_space_grouping, null_partitions, regroup
from common.errors import UserError
from common.io import file_sha256, read_json, readable_parquet, write_json, write_parquet
from common.ray_runner import Resources
from common.stage import StageDir
from common.wandb_runs import StageLog, model_artifact, table_artifact
from data_pipeline.label_space import LabelSpace
from sweeps.class_totals import ClassTotals
from sweeps.evaluation import Answers, EvaluationSettings
from sweeps.ranking import GreedySchedule, lesion_count
from sweeps.settings import GREEDY_TARGET_FRACTION, SweepSettings

TABLES = ("accuracy", "drops", "segregation", "fraction_curve")
# the segregation artifact (W&B): the index first (it names the artifact), the tables behind it and the summary
SEGREGATION_FILES = (
    "segregation.parquet",
    "accuracy.parquet",
    "drops.parquet",
    "tasks.parquet",
    "ranking.parquet",
    "reliability.parquet",
    "overlap.parquet",
    "fraction_curve.parquet",
    "null.parquet",
    "null_fraction_curve.parquet",
    "summary.json",
)


@dataclass(frozen=True)
class Sweep:
    """What the analysis needs from a sweep directory."""

    path: Path
    manifest: dict[str, Any]
    config: dict[str, Any]
    ranking: pd.DataFrame

    @property
    def layers(self) -> list[str]:
        """The swept units, in forward order (the ranking's layer_index)."""
        return list(self.ranking.sort_values("layer_index", kind="stable")["layer"].drop_duplicates())

    def class_totals(self) -> ClassTotals:
        """The sweep's per-class table; UserError for a sweep without one."""
        paths = [self.path / f"{name}.parquet" for name in ("class_losses", "class_intact")]
        if not all(readable_parquet(path) for path in paths):
            raise UserError(
                f"{self.path} has no per-class table (class_losses.parquet, class_intact.parquet; sweeps made before "
                "it was recorded lack it), which the random-task control ranks its pseudo-tasks from; "
                "rerun `specialize lesion` into a new --out and pass that as --sweep"
            )
        return ClassTotals.from_frames(*(pd.read_parquet(path) for path in paths))

    def settings(self, resources: Resources) -> SweepSettings:
        """The sweep's settings, as recorded, run with `resources`."""
        recorded = self.config["settings"]
        return SweepSettings(**{**recorded, "layers": tuple(recorded["layers"]), "resources": resources})

    @property
    def greedy_target(self) -> float:
        """The fraction of each layer a greedy ranking chose in rounds (sweeps before it was recorded: 0.2)."""
        return float(self.manifest.get("greedy_target", GREEDY_TARGET_FRACTION))


def check_greedy_reach(sweep: Sweep, settings: SegregationSettings) -> None:
    """UserError when a fraction analysed lesions more of a layer than a greedy sweep chose in rounds: the ranks
    past its target are one round's losses, not greedy choices."""
    if sweep.manifest.get("ranking") != "greedy":
        return
    largest = max(settings.all_fractions)
    for layer, rows in sweep.ranking.groupby("layer", sort=False):
        filters = int(rows["filter"].nunique())
        chosen = GreedySchedule.for_layer(filters, target_fraction=sweep.greedy_target).target
        if lesion_count(largest, filters, settings.rounding) > chosen:
            raise UserError(
                f"fraction {largest} lesions {lesion_count(largest, filters, settings.rounding)} of {layer}'s "
                f"{filters} filters but the greedy sweep in {sweep.path} chose {chosen} (--greedy-target "
                f"{sweep.greedy_target}); rerun `specialize lesion --ranking greedy --greedy-target {largest}` "
                f"or analyse fractions up to {sweep.greedy_target}"
            )


def check_figure_layer(sweep: Sweep, settings: SegregationSettings) -> None:
    """UserError when the figure's layer is not one the sweep lesioned."""
    if settings.figure_layer is not None and settings.figure_layer not in sweep.layers:
        raise UserError(
            f"--figure-layer {settings.figure_layer} is not a layer the sweep in {sweep.path} lesioned; choose one of "
            f"{', '.join(sweep.layers)}"
        )


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


def control_ranking(
    loaded: Any, sweep: Sweep, table: ClassTotals, data_dir: str, grouping: Grouping, out: Path, resources: Resources
) -> pd.DataFrame:
    """Filter rankings of the pseudo-tasks of `grouping`, by the sweep's method.

    One-shot: from the sweep's per-class table, no second sweep (equal to a sweep of the sweep's training images
    regrouped into the pseudo-tasks). Greedy: round 0 from the table, then greedy rounds of their own on the regrouped
    images (same seeded sample per real task, same settings as the sweep), resumable in `out`. `table`: the sweep's
    per-class table.
    """
    from sweeps.ranking import oneshot_ranking

    oneshot = table.task_losses(grouping)
    if sweep.manifest.get("ranking", "oneshot") != "greedy":
        return oneshot_ranking(oneshot)
    from sweeps.distributed import ChunkRunner, greedy_rankings, training_images
    from sweeps.stimuli import Stimuli

    settings = sweep.settings(resources)
    images = regroup(training_images(loaded, data_dir, settings.images_per_task, settings.seed), grouping)
    runner = ChunkRunner(out, loaded.model, Stimuli.from_tasks(images), settings, True, loaded.output_heads)
    return greedy_rankings(runner, loaded.model, grouping, table.frames()[1], oneshot)


def beton_sources(loaded: Any, data_dir: str) -> dict[str, BetonSource]:
    """Every task's test .beton, to be streamed in file order with the eval transform and global labels."""
    from data_pipeline.data_dir import DataDir

    data, resolution = DataDir(data_dir), loaded.config.data.resolution
    return {
        task: BetonSource(str(data.beton(task, "test")), loaded.label_space.offset(task), resolution)
        for task in loaded.label_space.tasks
    }


def evaluation_budget(stage: StageDir, resources: Resources) -> int:
    """The evaluation's memory budget (bytes per Ray task): the one recorded when the analysis in `stage` began, so
    a resumed analysis plans its passes as before; else half the free memory of the device a task gets."""
    from sweeps.distributed import task_budget

    recorded = stage.recorded() or {}
    return int(recorded["memory_budget"]) if recorded.get("memory_budget") else task_budget(resources)


def analysis_units(layers: Sequence[str], tasks: Sequence[str]) -> list[Unit]:
    """The intact network, then every (layer, lesioned task)."""
    return [INTACT_UNIT] + [Unit(layer, task) for layer in layers for task in tasks]


def summarise(
    tables: dict[str, pd.DataFrame], tasks: Sequence[str], settings: SegregationSettings, layers: Sequence[str]
) -> dict[str, Any]:
    """The JSON summary: intact accuracies, the segregation index per layer and pair at the headline fraction (with
    its null band and p-value when a null was drawn) and the area of each layer's index-by-fraction curve (several
    fractions)."""
    accuracy, segregation = tables["accuracy"], tables["segregation"]
    curve = tables["fraction_curve"]
    areas = curve.drop_duplicates(list(AREA_KEYS)) if "fraction" in curve.columns else curve
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
        "null_partitions": settings.null_partitions,
        "partition": settings.partition,
        "segregation_index": {
            scope: {
                f"{a}+{b}": [{"layer": row.layer, **_interval(row, "si"), **_null(row)} for row in pair.itertuples()]
                for (a, b), pair in headline[headline["scope"] == scope].groupby(["task_a", "task_b"], sort=False)
            }
            for scope in SCOPES
        },
        "fraction_curve_area": {
            scope: {
                f"{a}+{b}": [
                    {"layer": row.layer, **_interval(row, "area"), **_null(row, "area_")} for row in pair.itertuples()
                ]
                for (a, b), pair in areas[areas["scope"] == scope].groupby(["task_a", "task_b"], sort=False)
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


def _null(row: Any, prefix: str = "") -> dict[str, float]:
    """The null band and p-value of a row that has them (`prefix`: of the fraction curve's area), else nothing."""
    if not hasattr(row, f"{prefix}p_value"):
        return {}
    return {name: float(getattr(row, f"{prefix}{name}")) for name in ("null_mean", "null_low", "null_high", "p_value")}


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


def analysis_plan(
    ranking: pd.DataFrame, layers: Sequence[str], grouping: Grouping, settings: SegregationSettings
) -> dict[Unit, dict[float, list[int]]]:
    """The lesions of one analysis: the intact network, and each layer's top filters of each of `grouping`'s tasks
    at every fraction."""
    return lesion_plan(ranking, analysis_units(layers, list(grouping)), settings.all_fractions, settings.rounding)


def analysis_tables(
    answers: Answers,
    analyses: Sequence[Analysis],
    label_space: LabelSpace,
    settings: SegregationSettings,
    units: Sequence[str],
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The tables of the first analysis (TABLES, with the null's columns when more analyses, its partitions, follow;
    `null` and `null_fraction_curve` then hold every partition's indices) and its per-image predictions; layers
    numbered among the network's `units`. Partitions' predictions are dealt out and reduced one at a time."""
    names = class_names(label_space)
    predictions = iter_analysis_predictions(answers, analyses, names)
    observed = next(predictions)
    tasks = list(analyses[0].grouping)
    tables = segregation_tables(observed, tasks, settings.n_bootstraps, settings.seed, settings.level, units)
    tables = {name: tables[name] for name in TABLES}
    if len(analyses) > 1:
        indices = [
            partition_indices(frame, list(analysis.grouping), settings.seed)
            for frame, analysis in zip(predictions, analyses[1:])
        ]
        null, null_curve = (null_table(indices, tasks, name) for name in ("segregation", "fraction_curve"))
        tables["segregation"] = with_null(tables["segregation"], null)
        tables["null"] = null
        if not tables["fraction_curve"].empty:
            tables["fraction_curve"] = area_with_null(tables["fraction_curve"], null_curve)
            tables["null_fraction_curve"] = null_curve
    if not tables["fraction_curve"].empty:
        tables["fraction_curve"] = curve_by_fraction(tables["segregation"], tables["fraction_curve"])
    return tables, observed


def curve_by_fraction(segregation: pd.DataFrame, areas: pd.DataFrame) -> pd.DataFrame:
    """The fraction-curve table: per layer, scope, pair and fraction the index (with its interval, and its p-value
    where a null was drawn) beside the area of the layer's whole curve (repeated on each fraction's row)."""
    index_columns = [c for c in ("si", "si_low", "si_high", "p_value") if c in segregation.columns]
    keys = list(AREA_KEYS)
    curve = segregation[[*keys, "layer_index", "fraction", *index_columns]]
    merged = curve.merge(areas.drop(columns="layer_index"), on=keys, how="left")
    return merged.sort_values(["scope", "task_a", "task_b", "layer_index", "fraction"], ignore_index=True)


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
    from data_pipeline.data_dir import DataDir
    from lightning_modules.checkpoint import load_model
    from lightning_modules.units import lesion_units
    from sweeps.distributed import sweep_artifact

    sweep = read_sweep(sweep_dir)
    data = str(Path(data_dir or sweep.manifest["data"]).resolve())
    loaded = load_model(sweep.manifest["checkpoint"])
    if loaded.sha256 != sweep.manifest.get("checkpoint_sha256", loaded.sha256):
        raise UserError(f"checkpoint {loaded.checkpoint} changed since the sweep in {sweep.path}; rerun the sweep")
    DataDir(data).check_serves(loaded.label_space)
    check_greedy_reach(sweep, settings)
    check_figure_layer(sweep, settings)
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
    network_seed = int(loaded.config.seed)
    grouping = (
        null_partitions(loaded.label_space, 1, network_seed, settings.partition)[0]
        if settings.random_tasks
        else label_space_grouping(loaded.label_space)
    )
    partitions = null_partitions(loaded.label_space, settings.null_partitions, network_seed, settings.partition)
    table = sweep.class_totals() if settings.random_tasks or partitions else None
    with ray_session(address):
        budget = evaluation_budget(stage, settings.resources)
        out = stage.start(
            {
                "sweep": str(sweep.path.resolve()),
                "out": str(stage.path.resolve()),
                "address": address,
                **asdict(settings),
                "memory_budget": budget,
            }
        )
        ranking = (
            control_ranking(loaded, sweep, table, data, grouping, out / "pseudo_greedy", settings.resources)
            if settings.random_tasks
            else sweep.ranking
        )
        write_parquet(out / "ranking.parquet", ranking)
        analyses = [Analysis(grouping, analysis_plan(ranking, sweep.layers, grouping, settings))] + [
            Analysis(
                partition,
                analysis_plan(
                    control_ranking(
                        loaded, sweep, table, data, partition, out / "null_greedy" / f"{i}", settings.resources
                    ),
                    sweep.layers,
                    partition,
                    settings,
                ),
            )
            for i, partition in enumerate(partitions, start=1)
        ]
        answers = answer_with_ray(
            loaded.model,
            image_slices(beton_sources(loaded, data), settings.images_per_unit),
            analyses,
            out / "units",
            settings.resources,
            settings.batch_size,
            loaded.output_heads,
            EvaluationSettings(memory_budget=budget),
        )
    units = list(lesion_units(loaded.model))
    tables, predictions = analysis_tables(answers, analyses, loaded.label_space, settings, units)
    write_parquet(out / "predictions.parquet", predictions)
    write_parquet(out / "tasks.parquet", grouping_table(grouping, loaded.label_space))
    checks = ranking_checks(sweep.path, ranking, grouping, settings.fraction, settings.rounding, settings.seed)
    for name, frame in {**tables, **checks}.items():
        write_parquet(out / f"{name}.parquet", frame)
    summary = summarise(tables, list(grouping), settings, sweep.layers)
    write_json(out / "summary.json", summary)
    pngs = draw_figures(
        tables, out, settings, sweep.layers, label="random tasks" if settings.random_tasks else "network"
    )
    stage.finish(
        "segregation",
        StageLog(
            summary_scalars(summary),
            {name: frame for name, frame in tables.items() if not frame.empty},  # no curve with one fraction
            pngs,
            uses=[sweep_artifact(sweep.path), model_artifact(loaded.checkpoint, loaded.sha256)],
            makes=[table_artifact("segregation", out, [name for name in SEGREGATION_FILES if (out / name).is_file()])],
        ),
        sweep=str(sweep.path.resolve()),
        checkpoint=str(loaded.checkpoint),
        checkpoint_sha256=loaded.sha256,
        data=data,
        seeds={
            "bootstrap": settings.seed,
            "test_images": settings.seed,
            # partition i of the null (--random-tasks: partition 1) is drawn with the seed (this, i)
            "partitions": network_seed if partitions or settings.random_tasks else None,
        },
        null_partitions=settings.null_partitions,
        partition=settings.partition,
        tasks=list(grouping),
        heads=loaded.config.model.heads,
        n_bootstraps=settings.n_bootstraps,
        fractions=settings.all_fractions,
    )
    return summary


def summary_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """The segregation index of every layer and pair at the headline fraction (default scope), as W&B summary keys
    `si/<pair>/<layer>`, with its null's `p_value/...` and `null_mean/...`, and the fraction curve's `area/...`."""
    rows = summary["segregation_index"][summary["default_scope"]]
    scalars = {f"si/{pair}/{row['layer']}": row["si"] for pair, layers in rows.items() for row in layers}
    for name in ("p_value", "null_mean"):
        scalars |= {
            f"{name}/{pair}/{row['layer']}": row[name] for pair, layers in rows.items() for row in layers if name in row
        }
    areas = summary.get("fraction_curve_area", {}).get(summary["default_scope"], {})
    return scalars | {f"area/{pair}/{row['layer']}": row["area"] for pair, layers in areas.items() for row in layers}


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
