"""A study's own results: its trials (finished and missing) and the seed aggregation (`analysis.seeds`): the
segregation index per pair and layer as the mean across seeds with its t-interval, beside the random-task
control."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.report.discover import Run
from analysis.report.elements import Section, cell, figure_or_drawn, frame_table, interval
from common.io import readable_parquet
from common.layout import seeded_name

TRIAL_COLUMNS = ("name", "network", "seed", "pair", "stage", "best_val_loss")


def aggregate_dir(run: Run) -> Path:
    """Where a study keeps its seed aggregation."""
    return run.path / "aggregate"


def intact_figure(studies: list[Run]) -> Path | None:
    """The first study's intact-accuracy figure (`analysis.seeds.plot_intact`), if it was drawn."""
    paths = [aggregate_dir(run) / "figures" / "intact_accuracy.png" for run in studies]
    return next((path for path in paths if path.is_file()), None)


def expected_trials(config: dict) -> list[str]:
    """Every `<network>-seed<N>` a study config asks for (pairs and single-task controls)."""
    networks = [*(config.get("pairs") or {}), *(config.get("controls") or {})]
    return [seeded_name(network, seed) for network in networks for seed in config.get("seeds") or []]


def study_section(run: Run) -> Section:
    """The study's settings, its trials, and the segregation index across seeds."""
    config = run.config
    trials = (
        pd.read_parquet(run.path / "trials.parquet")
        if readable_parquet(run.path / "trials.parquet")
        else pd.DataFrame()
    )
    finished = list(trials["name"]) if "name" in trials.columns else []
    missing = [name for name in expected_trials(config) if name not in finished]
    analyses = config.get("analyses") or {}
    lesion = analyses.get("lesion") or {}
    section = Section(
        f"Study {cell(config.get('name'))}",
        facts=[
            ("seeds", cell(config.get("seeds"))),
            ("task pairs", cell(list(config.get("pairs") or {}))),
            ("single-task controls", cell(list(config.get("controls") or {}))),
            ("overrides", cell(config.get("overrides"))),
            (
                "lesion sweep",
                f"{cell(lesion.get('images_per_task'))} images per task, {cell(lesion.get('ranking'))} "
                f"ranking, {cell(analyses.get('checkpoint'))} checkpoint",
            ),
            (
                "trials finished",
                f"{len(finished)} of {len(expected_trials(config)) or len(finished)}"
                + (f"; missing: {', '.join(missing)}" if missing else ""),
            ),
        ],
    )
    if not trials.empty:
        section.tables.append(frame_table(trial_table(trials), "Trials", max_rows=len(trials)))
    section.subsections.append(seed_aggregation(run))
    return section


def trial_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per trial: network, seed, kind, last stage finished, best validation loss and validation top-1 per task."""
    top1 = [column for column in trials.columns if column.startswith("val/") and column.endswith("/top1")]
    table = trials[[column for column in TRIAL_COLUMNS if column in trials.columns] + top1]
    return table.rename(
        columns={
            "pair": "task pair",
            "best_val_loss": "best validation loss",
            **{column: f"{column.split('/')[1]} top-1" for column in top1},
        }
    )


def seed_aggregation(run: Run) -> Section:
    """The index across seeds: figure (the study's own, or drawn with `analysis.seeds.plot_pairs`) and table."""
    from analysis.seeds import plot_pairs

    directory = aggregate_dir(run)
    pairs = (
        pd.read_parquet(directory / "pairs.parquet")
        if readable_parquet(directory / "pairs.parquet")
        else pd.DataFrame()
    )
    summary = run.json("aggregate/summary.json")
    section = Section(
        "Seed aggregation",
        text=[
            f"The segregation index at the headline fraction ({cell(summary.get('fraction'))}, "
            f"{cell(summary.get('scope'))}) of every trial, as the mean across seeds with a 95% t-interval "
            "(mean ± t × SD / √n; no interval with one seed); the random-task control in grey; a star marks a layer "
            "whose index exceeds its null across seeds (sign-flip p < 0.05)."
        ],
    )
    if pairs.empty:
        section.text.append("No aggregation yet: no pair trial has finished its segregation analysis.")
        return section
    if "boot_low" in pairs:
        section.text.append(
            "The study asked for the three-level bootstrap too (aggregate.bootstrap: hierarchical): each cell gives "
            "its 95% interval, resampling seeds, then classes, then images (METHOD.md, Inference)."
        )
    tests = (
        pd.read_parquet(directory / "paired_tests.parquet")
        if readable_parquet(directory / "paired_tests.parquet")
        else pd.DataFrame()
    )
    section.figures.append(
        figure_or_drawn(
            directory / "figures" / "segregation_by_pair.png",
            lambda stem: plot_pairs(pairs, stem, tests),
            "Segregation by pair across seeds",
        )
    )
    section.tables.append(
        frame_table(
            pairs_by_layer(pairs),
            "Segregation index across seeds: mean [95% interval] (seeds)",
            "per-seed values: aggregate/seeds.parquet",
        )
    )
    if not tests.empty:
        section.tables.append(
            frame_table(
                paired_test_table(tests),
                "Network minus null across seeds: mean difference [95% t-interval], sign-flip p, combined p",
                "null: the mean of each seed's null partitions, or its random-task control; one-sided tests "
                "(METHOD.md, Inference)",
            )
        )
    return section


def paired_test_table(tests: pd.DataFrame) -> pd.DataFrame:
    """One row per pair and layer: index, null, the difference with its interval and the p-values."""
    return pd.DataFrame(
        {
            "pair": tests["pair"],
            "layer": tests["layer"],
            "seeds": tests["n_seeds"],
            "null": tests["null_source"],
            "mean index": tests["mean_si"].map(cell),
            "mean null": tests["mean_null"].map(cell),
            "difference": [
                interval(mean, low, high)
                for mean, low, high in zip(tests["mean_difference"], tests["low"], tests["high"])
            ],
            "sign-flip p": tests["p_sign_flip"].map(cell),
            "Fisher p": tests["p_fisher"].map(cell),
        }
    )


def pairs_by_layer(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per layer, one column per (pair, condition): mean [low, high] (n seeds), and the three-level
    bootstrap's interval where the study asked for it (`aggregate.bootstrap: hierarchical`)."""
    text = [
        f"{interval(mean, low, high)} ({n})"
        for mean, low, high, n in zip(pairs["mean_si"], pairs["low"], pairs["high"], pairs["n_seeds"])
    ]
    if "boot_low" in pairs:
        text = [
            f"{value}; bootstrap [{cell(low)}, {cell(high)}]" if not pd.isna(low) else value
            for value, low, high in zip(text, pairs["boot_low"], pairs["boot_high"])
        ]
    columns = [f"{pair}, {condition}" for pair, condition in zip(pairs["pair"], pairs["condition"])]
    wide = pairs.assign(value=text, column=columns).pivot(
        index=["layer_index", "layer"], columns="column", values="value"
    )
    return wide.reset_index().drop(columns="layer_index").rename_axis(columns=None)
