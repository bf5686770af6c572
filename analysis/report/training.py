"""Training: each run's curves (metrics.csv) and final metrics, and the intact accuracy of dual-task networks
beside the single-task networks of the same task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analysis.figures import plot_training_curves
from analysis.report.discover import Run
from analysis.report.elements import Section, cell, drawn_figure, figure_or_drawn, frame_table
from analysis.report.provenance import relative

METRICS = {"loss": "loss", "top1": "top-1", "top1_own": "top-1 (own outputs)", "top5": "top-5"}
SPLITS = {"val": "validation", "train": "training"}
OPEN_RUNS = 4  # more runs than this (a study) are shown closed


def read_epochs(path: Path) -> pd.DataFrame:
    """metrics.csv (Lightning's CSV log: training and validation rows apart) as one row per epoch."""
    if not path.is_file():
        return pd.DataFrame()
    log = pd.read_csv(path)
    if "epoch" not in log.columns or log.empty:
        return pd.DataFrame()
    return log.groupby("epoch", as_index=False).last()


def network_name(run: Run) -> str:
    """A training run's network name (its config's `name`), or its directory name."""
    return str(run.config.get("name") or run.path.name)


def run_tasks(run: Run) -> list[str]:
    """The tasks a network was trained on."""
    return [str(task) for task in run.config.get("tasks") or run.manifest.get("tasks") or []]


def training_section(runs: list[Run], root: Path) -> Section:
    """One subsection per training run: curves, final metrics and the settings that shape training."""
    return Section(
        "Training",
        text=[
            "Per epoch, from each run's metrics.csv: validation (solid) and training "
            "(dashed) loss and top-1 over all outputs per task, and the learning rate."
        ],
        subsections=[training_run(run, root, collapsed=len(runs) > OPEN_RUNS) for run in runs],
    )


def training_run(run: Run, root: Path, collapsed: bool) -> Section:
    """A training run's curves, final metrics per task and main settings."""
    name, epochs, summary = network_name(run), read_epochs(run.path / "metrics.csv"), run.json("summary.json")
    config = run.config
    section = Section(
        f"{name}: {relative(run.path, root)}",
        collapsed=collapsed,
        facts=[
            ("tasks", cell(run_tasks(run))),
            ("seed", cell(config.get("seed"))),
            ("epochs", f"{cell(summary.get('epochs'))} of {cell(config.get('trainer', {}).get('epochs'))}"),
            ("best validation loss", cell(summary.get("best_val_loss"))),
            ("model", ", ".join(f"{key} {cell(value)}" for key, value in (config.get("model") or {}).items())),
            ("optimiser", ", ".join(f"{key} {cell(value)}" for key, value in (config.get("optim") or {}).items())),
            (
                "batch size, resolution",
                f"{cell(config.get('data', {}).get('batch_size'))}, "
                f"{cell(config.get('data', {}).get('resolution'))} px",
            ),
        ],
    )
    if not summary:
        section.text.append("Unfinished: no summary.json yet; the curves show the epochs logged so far.")
    if not epochs.empty:
        section.figures.append(
            drawn_figure(
                lambda stem: plot_training_curves(epochs, stem, title=name),
                "Training curves",
                f"{name}: from {relative(run.path, root)}/metrics.csv",
            )
        )
    else:
        section.text.append("No metrics.csv with epochs in this run.")
    if summary.get("metrics"):
        section.tables.append(
            frame_table(final_metrics(summary["metrics"], run_tasks(run)), "Metrics at the end of training")
        )
    return section


def final_metrics(metrics: dict[str, Any], tasks: list[str]) -> pd.DataFrame:
    """Per task: loss, top-1 (all and own outputs) and top-5 on validation images; loss and top-1 on training ones."""
    shown = [("val", metric) for metric in METRICS] + [("train", "loss"), ("train", "top1")]
    return pd.DataFrame(
        [
            {
                "task": task,
                **{
                    f"{SPLITS[split]} {METRICS[metric]}": metrics.get(f"{split}/{task}/{metric}")
                    for split, metric in shown
                },
            }
            for task in tasks
        ]
    )


def intact_frame(runs: list[Run]) -> pd.DataFrame:
    """Per finished training run and task: network, pair (dual-task) or control (single-task), seed, validation top-1
    over all and over the task's own outputs (the columns `analysis.seeds.plot_intact` reads)."""
    rows = []
    for run in runs:
        metrics = run.json("summary.json").get("metrics") or {}
        tasks = run_tasks(run)
        rows += [
            {
                "network": network_name(run),
                "kind": "pair" if len(tasks) > 1 else "control",
                "seed": run.config.get("seed"),
                "task": task,
                "top1": metrics.get(f"val/{task}/top1"),
                "top1_own": metrics.get(f"val/{task}/top1_own"),
            }
            for task in tasks
            if f"val/{task}/top1" in metrics
        ]
    return pd.DataFrame(rows)


def intact_section(runs: list[Run], study_figure: Path | None) -> Section | None:
    """Validation top-1 per task of every trained network, dual- beside single-task (a study's own figure when it
    has one, else drawn with `analysis.seeds.plot_intact`); None when no run has finished."""
    from analysis.seeds import plot_intact

    intact = intact_frame(runs)
    if intact.empty:
        return None
    table = (
        intact.groupby(["task", "network", "kind"], sort=False)
        .agg(
            seeds=("seed", "nunique"),
            top1=("top1", "mean"),
            top1_min=("top1", "min"),
            top1_max=("top1", "max"),
            top1_own=("top1_own", "mean"),
        )
        .reset_index()
    )
    table["kind"] = table["kind"].map({"pair": "dual-task", "control": "single-task"})
    table = table.rename(
        columns={
            "top1": "top-1 (mean over seeds)",
            "top1_min": "lowest seed",
            "top1_max": "highest seed",
            "top1_own": "top-1, own outputs (mean)",
        }
    )
    figure = figure_or_drawn(
        study_figure,
        lambda stem: plot_intact(intact, stem),
        "Intact accuracy per task",
        "Validation top-1 over all outputs; bars: mean over seeds, dots: seeds; "
        "dual-task networks blue, single-task orange",
    )
    return Section(
        "Intact accuracy",
        text=[
            "How well each trained network does each of its tasks before any lesion: validation top-1 at the end of "
            "training, over all outputs (a dual-task network must also tell the tasks apart) and over the task's own "
            "outputs."
        ],
        figures=[figure],
        tables=[frame_table(table, "Validation top-1 per task and network")],
    )
