"""A study's results across seeds: tables, figures and the study's own W&B run.

From the finished trials of a study (`specialize.study`), for the headline lesion fraction and the default accuracy
scope (top-1 over all outputs):

- `seeds.parquet`: per pair, condition (the network's own tasks, or the random-task control), seed and layer, the
  segregation index with its hierarchical-bootstrap interval from that trial's analysis;
- `pairs.parquet`: per pair, condition and layer, the mean index across seeds with a 95% t-interval across seeds
  (mean +- t(0.975, n-1) x SD / sqrt(n); no interval with one seed);
- `intact.parquet`: per network (pairs and single-task controls), seed and task, the validation top-1 of the trained
  network (last epoch, over all outputs), so that dual- and single-task networks compare task by task;
- `decoding.parquet`, `rsa.parquet` (studies that enable them): per network, task and layer the held-out decoding
  accuracy, and per network and layer the RSA correlation with behaviour, as the mean across seeds with its
  t-interval;
- figures: the segregation index by layer, one line per pair with its seed interval as a band and the random-task
  control as a grey band (paper Fig. 3A / 5B); intact accuracy per task of every network across seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import pandas as pd
from scipy import stats

from analysis.figures import save_figure  # chooses matplotlib's Agg backend before pyplot is imported
from analysis.segregation.settings import DEFAULT_SCOPE
from common.io import write_json, write_parquet
from common.layout import CONTROL_DIR, SEGREGATION_DIR
from common.wandb_runs import StageLog, WandbTarget, log_stage
from lightning_modules.layer_names import CONV_LAYERS

CONDITIONS = {SEGREGATION_DIR: "network", CONTROL_DIR: "random tasks"}
LEVEL = 0.95


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
    columns = ["pair", "condition", "seed", "layer", "layer_index", "task_a", "task_b", "si", "si_low", "si_high"]
    return pd.concat(frames, ignore_index=True)[columns].sort_values(
        ["pair", "condition", "layer_index", "seed"], ignore_index=True
    )


def mean_across_seeds(table: pd.DataFrame, keys: list[str], value: str, level: float = LEVEL) -> pd.DataFrame:
    """Per group of `keys`: the number of seeds, mean and SD of `value`, and the t-interval of the mean (`low`,
    `high`; none with one seed)."""
    summary = table.groupby(keys, sort=False)[value].agg(n_seeds="count", mean="mean", sd="std").reset_index()
    half = stats.t.ppf(0.5 + level / 2, summary["n_seeds"] - 1) * summary["sd"] / np.sqrt(summary["n_seeds"])
    half = half.where(summary["n_seeds"] > 1)
    return summary.assign(low=summary["mean"] - half, high=summary["mean"] + half)


def across_seeds(seeds: pd.DataFrame, level: float = LEVEL) -> pd.DataFrame:
    """Per pair, condition and layer: seeds, mean index, SD and the t-interval across seeds."""
    keys = ["pair", "condition", "layer", "layer_index", "task_a", "task_b"]
    table = mean_across_seeds(seeds, keys, "si", level).rename(columns={"mean": "mean_si", "sd": "sd_si"})
    return table.sort_values(["pair", "condition", "layer_index"], ignore_index=True)


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


def intact_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per trained network, seed and task: validation top-1 over all outputs at the end of training."""
    rows = [
        {
            "network": trial["network"],
            "kind": "pair" if trial["pair"] else "control",
            "seed": trial["seed"],
            "task": task,
            "top1": trial.get(f"val/{task}/top1"),
        }
        for trial in trials.to_dict("records")
        for task in trial["tasks"]
    ]
    return pd.DataFrame(rows)


def plot_pairs(pairs: pd.DataFrame, stem: Path) -> list[Path]:
    """Segregation index by layer: one line per pair with its seed interval, the random-task control in grey."""
    figure, axis = plt.subplots(figsize=(7.5, 4))
    for pair, rows in pairs[pairs["condition"] == "network"].groupby("pair", sort=False):
        (line,) = axis.plot(
            rows["layer_index"], rows["mean_si"], marker="o", label=f"{pair} (n={rows['n_seeds'].max()})"
        )
        axis.fill_between(rows["layer_index"], rows["low"], rows["high"], color=line.get_color(), alpha=0.2)
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
    axis.set_xticks(range(1, len(CONV_LAYERS) + 1), CONV_LAYERS, rotation=45, ha="right")
    axis.set_ylabel("segregation index (mean across seeds)")
    axis.set_title("Task segregation by layer, 95% interval across seeds")
    axis.legend(frameon=False, fontsize=8)
    return save_figure(figure, stem)


def plot_intact(intact: pd.DataFrame, stem: Path) -> list[Path]:
    """Per task: the validation top-1 of every network trained on it (mean across seeds, seeds as dots)."""
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
            values = rows[rows["network"] == network]["top1"]
            axis.scatter([position] * len(values), values, color="black", s=10, zorder=3)
        axis.set_xticks(range(len(networks)), networks, rotation=30, ha="right")
        axis.set_ylim(0, 1)
        axis.set_title(f"{task} task")
    axes[0][0].set_ylabel("validation top-1 (dual: blue, single: orange)")
    return save_figure(figure, stem)


def aggregate_study(out: Path, trials: pd.DataFrame, fraction: float, wandb: WandbTarget) -> dict[str, Any]:
    """Write the seed aggregation of a study's finished trials into `out`, log it to W&B; returns its summary."""
    seeds, intact = seed_table(trials, fraction), intact_table(trials)
    pairs = across_seeds(seeds) if not seeds.empty else pd.DataFrame()
    tables = {"seeds": seeds, "pairs": pairs, "intact": intact, **representation_tables(trials)}
    for name, table in tables.items():
        write_parquet(out / f"{name}.parquet", table)
    pngs = {"intact_accuracy": plot_intact(intact, out / "figures" / "intact_accuracy")[0]}
    if not pairs.empty:
        pngs["segregation_by_pair"] = plot_pairs(pairs, out / "figures" / "segregation_by_pair")[0]
    summary = {
        "fraction": fraction,
        "scope": DEFAULT_SCOPE,
        "confidence_level": LEVEL,
        "trials": trials["name"].tolist(),
        "pairs": {
            f"{row.pair}/{row.condition}/{row.layer}": {
                "mean": row.mean_si,
                "low": row.low,
                "high": row.high,
                "n_seeds": int(row.n_seeds),
            }
            for row in pairs.itertuples()
        }
        if not pairs.empty
        else {},
    }
    write_json(out / "summary.json", summary)
    scalars = (
        {f"si/{row.pair}/{row.condition}/{row.layer}": float(row.mean_si) for row in pairs.itertuples()}
        if not pairs.empty
        else {}
    )
    log_stage(wandb, "aggregate", out, {"fraction": fraction}, StageLog(scalars, tables, pngs))
    return summary
