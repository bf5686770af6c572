"""A study's results across seeds: tables, figures and the study's own W&B run.

From the finished trials of a study (`specialize.study`), for the headline lesion fraction and the default accuracy
scope (top-1 over all outputs):

- `seeds.parquet`: per pair, condition (the network's own tasks, or the random-task control), seed and layer, the
  segregation index with its hierarchical-bootstrap interval from that trial's analysis;
- `pairs.parquet`: per pair, condition and layer, the mean index across seeds with a 95% t-interval across seeds
  (mean +- t(0.975, n-1) x SD / sqrt(n); no interval with one seed); with `aggregate.bootstrap: hierarchical` also the
  95% percentile interval of a three-level bootstrap (`boot_low`, `boot_high`: seeds with replacement, then for every
  drawn seed a class-then-image resample of its test set, from its analysis' predictions.parquet; none with one seed);
- `paired_tests.parquet`: per pair and layer, does the network's index exceed its null across seeds? Seed by seed the
  network's index minus its null (the mean of its null partitions where the analysis drew them, else its random-task
  control), with the mean difference, its t-interval and the exact sign-flip p-value (`analysis.inference`), and the
  Fisher and Stouffer combinations of the seeds' permutation p-values where the analyses have them;
- `intact.parquet`: per network (pairs and single-task controls), seed and task, the test top-1 over all outputs of
  the checkpoint the analyses lesion, with its hierarchical-bootstrap 95% interval (`analysis.accuracy`; paper
  Fig. 1C), so that dual- and single-task networks compare task by task (trials finished before it was measured: the
  validation top-1 of their last epoch, `split` "validation", no interval);
- `decoding.parquet`, `rsa.parquet` (studies that enable them): per network, task and layer the held-out decoding
  accuracy, and per network and layer the RSA correlation with behaviour, as the mean across seeds with its
  t-interval;
- figures: the segregation index by layer, one line per pair with its seed interval as a band, the random-task
  control as a grey band and a star over each layer whose sign-flip p < 0.05 (paper Fig. 3A / 5B); intact accuracy
  per task of every network across seeds.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import pandas as pd

from analysis.accuracy import ACCURACY_FILE
from analysis.bootstrap import nested_mean_resamples, percentile_interval, task_rng
from analysis.figures import label_layers, save_figure  # chooses matplotlib's Agg backend before pyplot is imported
from analysis.inference import AggregateSettings, combine_p_values, paired_difference, t_half_width
from analysis.segregation.indices import (
    CONDITION,
    INTACT_LAYER,
    proportional_drops,
    resample_accuracies,
    segregation_index,
)
from analysis.segregation.null import NULL_COLUMNS, as_real_pairs
from analysis.segregation.settings import DEFAULT_SCOPE, SCOPES
from common.errors import UserError
from common.io import write_json, write_parquet
from common.layout import ACCURACY_DIR, CONTROL_DIR, SEGREGATION_DIR
from common.wandb_runs import StageLog, WandbTarget, log_stage

CONDITIONS = {SEGREGATION_DIR: "network", CONTROL_DIR: "random tasks"}
LEVEL = 0.95
SIGNIFICANCE = 0.05  # the figure's stars
PAIR_KEYS = ["pair", "layer", "layer_index", "task_a", "task_b"]


def seed_table(trials: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """The segregation index of every pair trial, condition and layer at `fraction` (default scope)."""
    frames = []
    for trial in trials[trials["pair"]].itertuples():
        for directory, condition in CONDITIONS.items():
            path = Path(trial.directory) / directory / "segregation.parquet"
            if not path.is_file():
                continue
            table = pd.read_parquet(path)
            rows = table[(table["fraction"] == fraction) & (table["scope"] == DEFAULT_SCOPE)]
            frames.append(rows.assign(pair=trial.network, condition=condition, seed=trial.seed))
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    columns = ["pair", "condition", "seed", "layer", "layer_index", "task_a", "task_b", "si", "si_low", "si_high"]
    columns += [column for column in NULL_COLUMNS if column in table.columns]
    return table[columns].sort_values(["pair", "condition", "layer_index", "seed"], ignore_index=True)


def mean_across_seeds(table: pd.DataFrame, keys: list[str], value: str, level: float = LEVEL) -> pd.DataFrame:
    """Per group of `keys`: the number of seeds, mean and SD of `value`, and the t-interval of the mean (`low`,
    `high`; none with one seed)."""
    summary = table.groupby(keys, sort=False)[value].agg(n_seeds="count", mean="mean", sd="std").reset_index()
    half = t_half_width(summary["sd"], summary["n_seeds"], level)
    return summary.assign(low=summary["mean"] - half, high=summary["mean"] + half)


def across_seeds(seeds: pd.DataFrame, level: float = LEVEL) -> pd.DataFrame:
    """Per pair, condition and layer: seeds, mean index, SD and the t-interval across seeds."""
    keys = ["pair", "condition", "layer", "layer_index", "task_a", "task_b"]
    table = mean_across_seeds(seeds, keys, "si", level).rename(columns={"mean": "mean_si", "sd": "sd_si"})
    return table.sort_values(["pair", "condition", "layer_index"], ignore_index=True)


def network_index_resamples(directory: Path, fraction: float, keys: pd.DataFrame, count: int, seed: int) -> np.ndarray:
    """`count` class-then-image resamples (`analysis.bootstrap`, generators seeded by `seed` and each task) of one
    analysis' segregation index at `fraction` in the default scope, for each (`layer`, `task_a`, `task_b`) of `keys`,
    from its per-image predictions (`directory`/predictions.parquet): (count, len(keys))."""
    path = directory / "predictions.parquet"
    if not path.is_file():
        raise UserError(
            f"aggregate.bootstrap hierarchical resamples each seed's test images, but {path} is missing; rerun that "
            "trial's segregation analysis, or set aggregate.bootstrap: none"
        )
    columns = [*CONDITION, "eval_task", "image", "label", SCOPES[DEFAULT_SCOPE]]
    wanted = [[("layer", "==", INTACT_LAYER)], [("fraction", "==", fraction)]]
    drops = proportional_drops(resample_accuracies(pd.read_parquet(path, columns=columns, filters=wanted), count, seed))
    indices = [
        segregation_index(drops, row.layer, fraction, row.task_a, row.task_b, DEFAULT_SCOPE).samples
        for row in keys.itertuples()
    ]
    return np.stack(indices, axis=1)


def seed_index_resamples(
    directories: list[Path], inner_seeds: list[int], fraction: float, keys: pd.DataFrame, unit: int, count: int
) -> np.ndarray:
    """`network_index_resamples` of the `unit`-th seed's analysis (in `directories`, generators from `inner_seeds`)."""
    return network_index_resamples(directories[unit], fraction, keys, count, inner_seeds[unit])


def hierarchical_intervals(
    pairs: pd.DataFrame,
    seeds: pd.DataFrame,
    trials: pd.DataFrame,
    fraction: float,
    settings: AggregateSettings,
    level: float = LEVEL,
) -> pd.DataFrame:
    """`pairs` (from `across_seeds` of `seeds`) with the percentile interval of a three-level bootstrap of each mean
    index (`boot_low`, `boot_high`; none with one seed): the seeds drawn with replacement, and every drawn seed a fresh
    class-then-image resample of its analysis' test set (`analysis.bootstrap.nested_mean_resamples`)."""
    folders = {condition: directory for directory, condition in CONDITIONS.items()}
    trial_directory = {(trial.network, trial.seed): Path(trial.directory) for trial in trials.itertuples()}
    frames = []
    for (pair, condition), rows in pairs.groupby(["pair", "condition"], sort=False):
        networks = sorted(set(seeds[(seeds["pair"] == pair) & (seeds["condition"] == condition)]["seed"]))
        directories = [trial_directory[(pair, seed)] / folders[condition] for seed in networks]
        low = high = np.full(len(rows), np.nan)
        if len(directories) > 1:
            inner_seeds = [int(np.random.SeedSequence([settings.seed, seed]).generate_state(1)[0]) for seed in networks]
            resamples = nested_mean_resamples(
                len(directories),
                settings.resamples,
                task_rng(settings.seed, f"{pair}/{condition}"),
                partial(seed_index_resamples, directories, inner_seeds, fraction, rows),
            )
            low, high = percentile_interval(resamples, level)
        frames.append(rows.assign(boot_low=low, boot_high=high))
    return pd.concat(frames).sort_values(["pair", "condition", "layer_index"], ignore_index=True)


def seed_nulls(seeds: pd.DataFrame) -> pd.DataFrame:
    """The network condition's rows with each seed's null index (`null`) and its source: the mean of the seed's null
    partitions where its analysis has them, else the seed's random-task control (NaN without either)."""
    network = seeds[seeds["condition"] == "network"]
    controls = [
        as_real_pairs(rows, pair_tasks(network[network["pair"] == pair]))
        for pair, rows in seeds[seeds["condition"] == "random tasks"].groupby("pair", sort=False)
    ]
    columns = [*PAIR_KEYS, "seed", "si"]
    control = pd.concat(controls, ignore_index=True)[columns] if controls else pd.DataFrame(columns=columns)
    merged = network.merge(control.rename(columns={"si": "control_si"}), on=[*PAIR_KEYS, "seed"], how="left")
    partitions = merged["null_mean"] if "null_mean" in merged.columns else pd.Series(np.nan, index=merged.index)
    source = np.where(partitions.notna(), "null partitions", np.where(merged["control_si"].notna(), "random tasks", ""))
    return merged.assign(null=partitions.fillna(merged["control_si"]), null_source=source)


def pair_tasks(rows: pd.DataFrame) -> list[str]:
    """A pair's tasks in label-space order, from its index rows (pairs of tasks in `combinations` order)."""
    return list(dict.fromkeys(name for pair in zip(rows["task_a"], rows["task_b"]) for name in pair))


def paired_tests(seeds: pd.DataFrame, level: float = LEVEL) -> pd.DataFrame:
    """Per pair and layer: the mean index and mean null across seeds, the paired difference network minus null with
    its t-interval and sign-flip p-value, and the combined permutation p-values (NaN where the seeds have none)."""
    rows = []
    for key, group in seed_nulls(seeds).groupby(PAIR_KEYS, sort=False):
        p_values = group["p_value"].to_numpy() if "p_value" in group.columns else np.array([])
        rows.append(
            {
                **dict(zip(PAIR_KEYS, key)),
                "n_seeds": len(group),
                "null_source": ", ".join(sorted(set(group["null_source"]) - {""})),
                "mean_si": float(group["si"].mean()),
                "mean_null": float(group["null"].mean()),
                **paired_difference(group["si"].to_numpy(), group["null"].to_numpy(), level),
                "p_fisher": combine_p_values(p_values, "fisher"),
                "p_stouffer": combine_p_values(p_values, "stouffer"),
            }
        )
    return pd.DataFrame(rows).sort_values(["pair", "layer_index"], ignore_index=True) if rows else pd.DataFrame()


REPRESENTATIONS = {  # table name -> (a trial's file, the keys of a row, the value averaged across seeds)
    "decoding": ("decode/decoding.parquet", ["network", "task", "layer", "layer_index", "chance"], "accuracy"),
    "rsa": ("rsa/rsa.parquet", ["network", "layer", "layer_index"], "correlation"),
}


def representation_tables(trials: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Decoding and RSA of the trials that ran them, as the mean across seeds with its t-interval per row."""
    tables = {}
    for name, (relative, keys, value) in REPRESENTATIONS.items():
        frames = [
            pd.read_parquet(path).assign(seed=trial.seed)
            for trial in trials.itertuples()
            if (path := Path(trial.directory) / relative).is_file()
        ]
        if frames:
            tables[name] = mean_across_seeds(pd.concat(frames, ignore_index=True), keys, value)
    return tables


def read_test_accuracy(path: Path) -> pd.DataFrame:
    """A trial's test accuracy in the default scope, by task."""
    table = pd.read_parquet(path)
    return table[table["scope"] == DEFAULT_SCOPE].set_index("task")


def intact_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per trained network, seed and task: test top-1 over all outputs with its interval (`low`, `high`), `split`
    "test"; for a trial without a test accuracy, the validation top-1 at the end of training."""
    rows = []
    for trial in trials.to_dict("records"):
        path = Path(trial["directory"]) / ACCURACY_DIR / ACCURACY_FILE
        tested = read_test_accuracy(path) if path.is_file() else None
        for task in trial["tasks"]:
            row = {"network": trial["network"], "kind": "pair" if trial["pair"] else "control", "seed": trial["seed"]}
            if tested is not None:
                found = tested.loc[task]
                row |= {"split": "test", "top1": found.accuracy, "low": found.accuracy_low, "high": found.accuracy_high}
            else:
                row |= {"split": "validation", "top1": trial.get(f"val/{task}/top1"), "low": np.nan, "high": np.nan}
            rows.append({**row, "task": task})
    return pd.DataFrame(rows)


def plot_pairs(pairs: pd.DataFrame, stem: Path, tests: pd.DataFrame | None = None) -> list[Path]:
    """Segregation index by layer: one line per pair with its seed interval, the random-task control in grey, and
    a star above each layer whose paired sign-flip p-value (`tests`, from `paired_tests`) is below SIGNIFICANCE."""
    figure, axis = plt.subplots(figsize=(7.5, 4))
    for pair, rows in pairs[pairs["condition"] == "network"].groupby("pair", sort=False):
        (line,) = axis.plot(
            rows["layer_index"], rows["mean_si"], marker="o", label=f"{pair} (n={rows['n_seeds'].max()})"
        )
        axis.fill_between(rows["layer_index"], rows["low"], rows["high"], color=line.get_color(), alpha=0.2)
        if tests is not None and not tests.empty:
            significant = tests[(tests["pair"] == pair) & (tests["p_sign_flip"] < SIGNIFICANCE)]["layer"]
            marked = rows[rows["layer"].isin(significant)]
            top = marked["high"].fillna(marked["mean_si"])
            axis.scatter(marked["layer_index"], top + 0.05, marker="*", color=line.get_color(), s=40)
    for pair, rows in pairs[pairs["condition"] == "random tasks"].groupby("pair", sort=False):
        axis.fill_between(
            rows["layer_index"],
            rows["low"].fillna(rows["mean_si"]),
            rows["high"].fillna(rows["mean_si"]),
            color="grey",
            alpha=0.3,
            label=f"{pair}: random tasks",
        )
        axis.plot(rows["layer_index"], rows["mean_si"], color="grey", linewidth=1)
    axis.axhline(0.0, color="black", linewidth=0.6)
    label_layers(axis, pairs)
    axis.set_ylabel("segregation index (mean across seeds)")
    axis.set_title(f"Task segregation by layer, 95% interval across seeds (*: sign-flip p < {SIGNIFICANCE})")
    axis.legend(frameon=False, fontsize=8)
    return save_figure(figure, stem)


def plot_intact(intact: pd.DataFrame, stem: Path) -> list[Path]:
    """Per task: the top-1 of every network trained on it (mean across seeds; seeds as dots, with their bootstrap
    intervals where the table has them: `intact_table`)."""
    tasks = list(dict.fromkeys(intact["task"]))
    figure, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.6), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        rows = intact[intact["task"] == task]
        networks = list(dict.fromkeys(rows["network"]))
        means = [rows[rows["network"] == network]["top1"].mean() for network in networks]
        axis.bar(
            range(len(networks)),
            means,
            color=["tab:blue" if n in set(rows[rows.kind == "pair"].network) else "tab:orange" for n in networks],
        )
        for position, network in enumerate(networks):
            seeds = rows[rows["network"] == network]
            axis.scatter([position] * len(seeds), seeds["top1"], color="black", s=10, zorder=3)
            if "low" in seeds.columns:
                axis.vlines([position] * len(seeds), seeds["low"], seeds["high"], color="black", linewidth=0.8)
        axis.set_xticks(range(len(networks)), networks, rotation=30, ha="right")
        axis.set_ylim(0, 1)
        axis.set_title(f"{task} task")
    split = "test" if "split" in intact.columns and (intact["split"] == "test").all() else "validation"
    axes[0][0].set_ylabel(f"{split} top-1 (dual: blue, single: orange)")
    figure.suptitle("seeds as dots with their 95% bootstrap intervals" if split == "test" else "seeds as dots")
    return save_figure(figure, stem)


def aggregate_study(
    out: Path,
    trials: pd.DataFrame,
    fraction: float,
    wandb: WandbTarget,
    settings: AggregateSettings = AggregateSettings(),
) -> dict[str, Any]:
    """Write the seed aggregation of a study's finished trials into `out`, log it to W&B; returns its summary."""
    seeds, intact = seed_table(trials, fraction), intact_table(trials)
    pairs = across_seeds(seeds) if not seeds.empty else pd.DataFrame()
    if settings.bootstrap == "hierarchical" and not pairs.empty:
        pairs = hierarchical_intervals(pairs, seeds, trials, fraction, settings)
    tests = paired_tests(seeds) if not seeds.empty else pd.DataFrame()
    tables = {
        "seeds": seeds,
        "pairs": pairs,
        "paired_tests": tests,
        "intact": intact,
        **representation_tables(trials),
    }
    for name, table in tables.items():
        write_parquet(out / f"{name}.parquet", table)
    pngs = {"intact_accuracy": plot_intact(intact, out / "figures" / "intact_accuracy")[0]}
    if not pairs.empty:
        pngs["segregation_by_pair"] = plot_pairs(pairs, out / "figures" / "segregation_by_pair", tests)[0]
    summary = {
        "fraction": fraction,
        "scope": DEFAULT_SCOPE,
        "confidence_level": LEVEL,
        "bootstrap": asdict(settings),
        "trials": trials["name"].tolist(),
        "pairs": {
            f"{row.pair}/{row.condition}/{row.layer}": {
                "mean": row.mean_si,
                "low": row.low,
                "high": row.high,
                "n_seeds": int(row.n_seeds),
                **({"boot_low": row.boot_low, "boot_high": row.boot_high} if "boot_low" in pairs.columns else {}),
            }
            for row in pairs.itertuples()
        }
        if not pairs.empty
        else {},
        "paired_tests": {
            f"{row.pair}/{row.layer}": {
                "null_source": row.null_source,
                "mean_difference": row.mean_difference,
                "low": row.low,
                "high": row.high,
                "p_sign_flip": row.p_sign_flip,
                "p_fisher": row.p_fisher,
                "n_seeds": int(row.n_seeds),
            }
            for row in tests.itertuples()
        },
    }
    write_json(out / "summary.json", summary)
    scalars = {f"si/{row.pair}/{row.condition}/{row.layer}": float(row.mean_si) for row in pairs.itertuples()}
    scalars |= {f"p_sign_flip/{row.pair}/{row.layer}": float(row.p_sign_flip) for row in tests.itertuples()}
    log_stage(wandb, "aggregate", out, {"fraction": fraction}, StageLog(scalars, tables, pngs))
    return summary
