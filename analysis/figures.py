"""Figures of the analyses, as PNG and SVG (matplotlib, Agg backend).

- `plot_segregation_by_layer`: the segregation index per conv layer with its 95% CI band, several curves
  (networks or task pairs) on one axis (paper Fig. 3A / 5B);
- `plot_normalised_performance`: normalised performance of each task after lesioning each task's top filters,
  for one layer (Fig. 2B);
- `plot_drop_heatmap`: proportional drops d(X|Y) across layers;
- `plot_decoding_bars`: decoding accuracy of held-out classes per network and task with SEM and chance (Fig. 1);
- `plot_layer_curves`: a value per layer, one line per network with its SEM band, optionally over a reference
  band (RSA's noise ceiling) or line (decoding's chance), one panel per task;
- `plot_image_grid`: rows of images with captions (feature visualisation: optimised and natural images).
- `plot_training_curves`: loss and top-1 per task and split by epoch, and the learning rate, of one training run;
- `plot_filter_importance`: per layer, each filter's loss increase for two tasks when lesioned alone, with each
  task's top filters marked (the filters the segregation analysis lesions).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.segregation.settings import SIGNIFICANCE  # noqa: E402
from common.io import atomic_path, remove_stale_temporaries  # noqa: E402

FORMATS = ("png", "svg")


def save_figure(figure: plt.Figure, stem: str | os.PathLike) -> list[Path]:
    """Write `figure` as stem.png and stem.svg, atomically, and close it; returns the paths."""
    paths = []
    for fmt in FORMATS:
        path = Path(f"{stem}.{fmt}")
        remove_stale_temporaries(path)  # left by a killed run
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
        paths.append(path)
    plt.close(figure)
    return paths


def plot_segregation_by_layer(
    curves: Mapping[str, pd.DataFrame], stem: str | os.PathLike, title: str = "Task segregation"
) -> list[Path]:
    """One line with a CI band per curve; each frame has one row per layer with `layer_index`, si, si_low, si_high.

    A frame with a permutation null (`null_low`, `null_high`, `p_value`: `analysis.segregation.null`) also gets its
    null band, hatched in the curve's colour, and a star above each layer whose p < 0.05."""
    figure, axis = plt.subplots(figsize=(7, 4))
    for label, frame in curves.items():
        frame = frame.sort_values("layer_index")
        (line,) = axis.plot(frame["layer_index"], frame["si"], marker="o", label=label)
        axis.fill_between(frame["layer_index"], frame["si_low"], frame["si_high"], color=line.get_color(), alpha=0.25)
        if "p_value" in frame.columns:
            draw_null(axis, frame, line.get_color(), label)
    axis.axhline(0.0, color="grey", linewidth=0.8)
    label_layers(axis, pd.concat(list(curves.values())) if curves else pd.DataFrame(columns=["layer", "layer_index"]))
    axis.set_ylabel("segregation index")
    axis.set_title(title)
    axis.legend(frameon=False)
    return save_figure(figure, stem)


def label_layers(axis: plt.Axes, rows: pd.DataFrame) -> None:
    """Label the x axis, where layers sit at their `layer_index`, with the names of the layers in `rows` (columns
    layer, layer_index), in forward order."""
    names = rows[["layer_index", "layer"]].drop_duplicates().sort_values("layer_index")
    axis.set_xticks(names["layer_index"].tolist(), names["layer"].tolist(), rotation=45, ha="right")


def draw_null(axis: Any, frame: pd.DataFrame, color: str, label: str) -> None:
    """A curve's null band (2.5-97.5 percentiles of the null partitions' indices) and a star over each layer whose
    permutation p < SIGNIFICANCE."""
    axis.fill_between(
        frame["layer_index"],
        frame["null_low"],
        frame["null_high"],
        facecolor="none",
        edgecolor=color,
        hatch="///",
        linewidth=0.0,
        alpha=0.6,
        label=f"{label}: null (95% of {int(frame['n_null'].max())} random partitions)",
    )
    significant = frame[frame["p_value"] < SIGNIFICANCE]
    axis.scatter(
        significant["layer_index"],
        significant["si_high"] + 0.04,
        marker="*",
        color=color,
        s=40,
        label=f"{label}: p < {SIGNIFICANCE}" if len(significant) else None,
    )


def plot_normalised_performance(drops: pd.DataFrame, layer: str, stem: str | os.PathLike) -> list[Path]:
    """Grouped bars for one layer: for each lesioned task, the normalised performance of every task with its CI.

    `drops` holds the rows of one fraction and scope (columns lesioned_task, eval_task, normalised[_low/_high]).
    """
    rows = drops[drops["layer"] == layer]
    if rows.empty:
        raise ValueError(f"no drops for layer {layer!r}")
    lesioned_tasks = list(dict.fromkeys(rows["lesioned_task"]))
    eval_tasks = list(dict.fromkeys(rows["eval_task"]))
    width = 0.8 / len(eval_tasks)
    figure, axis = plt.subplots(figsize=(1.5 + 1.6 * len(lesioned_tasks), 4))
    for offset, eval_task in enumerate(eval_tasks):
        bars = rows[rows["eval_task"] == eval_task].set_index("lesioned_task").reindex(lesioned_tasks)
        positions = np.arange(len(lesioned_tasks)) + (offset - (len(eval_tasks) - 1) / 2) * width
        error = np.abs(bars[["normalised_low", "normalised_high"]].to_numpy().T - bars["normalised"].to_numpy())
        axis.bar(positions, bars["normalised"], width, yerr=error, capsize=3, label=f"{eval_task} task")
    axis.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    axis.set_xticks(range(len(lesioned_tasks)), [f"{task} filters\nlesioned" for task in lesioned_tasks])
    axis.set_ylabel("normalised performance")
    axis.set_title(f"{layer}: lesions of the top filters")
    axis.legend(frameon=False)
    return save_figure(figure, stem)


def plot_drop_heatmap(drops: pd.DataFrame, stem: str | os.PathLike) -> list[Path]:
    """Heat map of d(X|Y): one row per (evaluated X, lesioned Y), one column per layer (by layer_index, labelled by
    its `layer` name); one fraction and scope."""
    table = drops.pivot(index=["eval_task", "lesioned_task"], columns="layer_index", values="drop")  # NaN kept
    labels = [f"d({x}|{y})" for x, y in table.index]
    values = table.to_numpy(dtype=float)
    lowest = np.nanmin(values, initial=0.0)  # 0 when every drop is undefined (a task never right when intact)
    figure, axis = plt.subplots(figsize=(8, 0.5 + 0.45 * len(labels)))
    image = axis.imshow(values, aspect="auto", cmap="viridis", vmin=min(0.0, lowest), vmax=1.0)
    axis.set_yticks(range(len(labels)), labels)
    names = dict(zip(drops["layer_index"], drops["layer"]))
    axis.set_xticks(range(len(table.columns)), [names[i] for i in table.columns], rotation=45, ha="right")
    for (row, column), value in np.ndenumerate(values):
        axis.text(
            column, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value < 0.5 else "black"
        )
    figure.colorbar(image, ax=axis, label="proportional drop")
    axis.set_title("Proportional drop d(evaluated | lesioned)")
    return save_figure(figure, stem)


def plot_decoding_bars(summary: pd.DataFrame, stem: str | os.PathLike, title: str = "Decoding") -> list[Path]:
    """Grouped bars: one group per task (its held-out classes), one bar per network (accuracy with SEM), and each
    task's chance level as a dashed line over its group. `summary` has one row per (network, task)."""
    tasks = list(dict.fromkeys(summary["task"]))
    networks = list(dict.fromkeys(summary["network"]))
    width = 0.8 / len(networks)
    figure, axis = plt.subplots(figsize=(1.5 + 1.2 * len(tasks) * max(1, len(networks) / 2), 4))
    for offset, network in enumerate(networks):
        rows = summary[summary["network"] == network].set_index("task").reindex(tasks)
        positions = np.arange(len(tasks)) + (offset - (len(networks) - 1) / 2) * width
        axis.bar(positions, rows["accuracy"], width, yerr=rows["sem"], capsize=3, label=network)
    for position, task in enumerate(tasks):
        chance = float(summary.loc[summary["task"] == task, "chance"].iloc[0])
        axis.hlines(
            chance,
            position - 0.45,
            position + 0.45,
            colors="black",
            linestyles="--",
            linewidth=1,
            label="chance" if position == 0 else None,
        )
    axis.set_xticks(range(len(tasks)), [f"{task}\nheld-out classes" for task in tasks])
    axis.set_ylabel("accuracy (mean ± SEM across folds)")
    axis.set_ylim(0, 1.05)
    axis.set_title(title)
    axis.legend(frameon=False, fontsize=8)
    return save_figure(figure, stem)


def plot_layer_curves(
    panels: Mapping[str, pd.DataFrame],
    stem: str | os.PathLike,
    ylabel: str,
    bands: Mapping[str, tuple[float, float]] | None = None,
    band_label: str = "",
    lines: Mapping[str, float] | None = None,
    line_label: str = "",
) -> list[Path]:
    """One panel per entry of `panels` (a frame with network, layer, layer_index, value, and sem or an interval low,
    high): a line per network across its layers (in layer_index order) with its interval (else value +- SEM) as a
    band, over the panel's reference band (e.g. the noise ceiling) and line (e.g. chance)."""
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4), squeeze=False, sharey=True)
    for axis, (title, frame) in zip(axes[0], panels.items()):
        layers = list(frame.sort_values("layer_index", kind="stable")["layer"].drop_duplicates())
        if bands and title in bands:
            axis.axhspan(*bands[title], color="grey", alpha=0.3, label=band_label)
        if lines and title in lines:
            axis.axhline(lines[title], color="black", linestyle="--", linewidth=1, label=line_label)
        for network, rows in frame.groupby("network", sort=False):
            rows = rows.set_index("layer").reindex(layers)
            (line,) = axis.plot(range(len(layers)), rows["value"], marker="o", label=network)
            has_interval = {"low", "high"} <= set(rows.columns)
            axis.fill_between(
                range(len(layers)),
                rows["low"] if has_interval else rows["value"] - rows["sem"],
                rows["high"] if has_interval else rows["value"] + rows["sem"],
                color=line.get_color(),
                alpha=0.2,
            )
        axis.set_xticks(range(len(layers)), layers, rotation=45, ha="right")
        axis.set_title(title)
        axis.legend(frameon=False, fontsize=8)
    axes[0][0].set_ylabel(ylabel)
    return save_figure(figure, stem)


def plot_image_grid(
    rows: Sequence[tuple[str, Sequence[np.ndarray], Sequence[str]]],
    stem: str | os.PathLike,
    title: str,
    column_titles: Sequence[str] = (),
) -> list[Path]:
    """A grid with one row per (row label, images HxWx3 in [0, 1], captions); empty cells stay blank."""
    columns = max(len(images) for _, images, _ in rows)
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(1.6 * columns, 1.75 * len(rows) + 0.4), squeeze=False, layout="constrained"
    )
    for axes_row, (label, images, captions) in zip(axes, rows):
        for column, axis in enumerate(axes_row):
            axis.set_xticks([])
            axis.set_yticks([])
            if column < len(images):
                axis.imshow(images[column], interpolation="nearest")
                axis.set_xlabel(captions[column], fontsize=6)
            else:
                axis.axis("off")
        axes_row[0].set_ylabel(label, fontsize=8)
    for axis, name in zip(axes[0], column_titles):
        axis.set_title(name, fontsize=8)
    figure.suptitle(title)
    return save_figure(figure, stem)


def plot_training_curves(epochs: pd.DataFrame, stem: str | os.PathLike, title: str = "Training") -> list[Path]:
    """Loss and top-1 (over all outputs) per task by epoch, validation solid and training dashed, and the learning rate.

    `epochs` has one row per epoch: `epoch` (from 0) and metrics named `<split>/<task>/<metric>` (as in a training
    run's metrics.csv), optionally `lr`.
    """
    tasks = list(dict.fromkeys(column.split("/")[1] for column in epochs.columns if column.count("/") == 2))
    panels = {"loss": "cross-entropy loss", "top1": "top-1 accuracy (all outputs)"}
    if "lr" in epochs.columns and epochs["lr"].notna().any():
        panels["lr"] = "learning rate"
    figure, axes = plt.subplots(1, len(panels), figsize=(3.9 * len(panels), 3.3), squeeze=False)
    x = epochs["epoch"] + 1
    for axis, (metric, label) in zip(axes[0], panels.items()):
        if metric == "lr":
            axis.plot(x, epochs["lr"], marker="o", markersize=3, color="black")
            axis.set_yscale("log")
        for index, task in enumerate(tasks if metric != "lr" else ()):
            for split, style in (("val", "-"), ("train", "--")):
                column = f"{split}/{task}/{metric}"
                if column in epochs.columns and epochs[column].notna().any():
                    axis.plot(
                        x,
                        epochs[column],
                        linestyle=style,
                        marker="o",
                        markersize=3,
                        color=f"C{index % 10}",
                        label=f"{task}, {'validation' if split == 'val' else 'training'}",
                    )
        if metric == "top1":
            axis.set_ylim(0, 1)
        axis.set_xlim(0.5, x.max() + 0.5)
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))
    axes[0][0].legend(frameon=False, fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, stem)


def plot_filter_importance(importance: pd.DataFrame, tasks: tuple[str, str], stem: str | os.PathLike) -> list[Path]:
    """One panel per layer: each filter's loss increase when lesioned alone, task A (x) against task B (y).

    `importance` has one row per (layer, filter, task): layer, layer_index, filter, task, increase, top (whether the
    filter is among the task's top filters). Filters in A's top set are blue, B's orange, both red, others grey.
    """
    layers = list(dict.fromkeys(importance.sort_values("layer_index")["layer"]))
    columns = min(len(layers), 5)
    rows = math.ceil(len(layers) / columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.2 + 2.4 * columns, 1.2 + 2.3 * rows), squeeze=False, layout="constrained"
    )
    first, second = tasks
    groups = {
        "tab:blue": f"top {first} filters",
        "tab:orange": f"top {second} filters",
        "tab:red": "top for both",
        "0.6": "others",
    }
    for axis, layer in zip(axes.flat, layers):
        rows_of_layer = importance[importance["layer"] == layer]
        increase = rows_of_layer.pivot(index="filter", columns="task", values="increase")
        top = rows_of_layer.pivot(index="filter", columns="task", values="top").astype(bool)
        top_a, top_b = top[first].to_numpy(), top[second].to_numpy()
        colours = np.where(top_a & top_b, "tab:red", np.where(top_a, "tab:blue", np.where(top_b, "tab:orange", "0.6")))
        for colour in groups:
            chosen = colours == colour
            axis.scatter(increase[first][chosen], increase[second][chosen], color=colour, s=8, label=groups[colour])
        limits = [min(axis.get_xlim()[0], axis.get_ylim()[0]), max(axis.get_xlim()[1], axis.get_ylim()[1])]
        axis.plot(limits, limits, color="black", linewidth=0.5)
        axis.set_title(layer, fontsize=9)
        axis.tick_params(labelsize=7)
    for axis in axes.flat[len(layers) :]:
        axis.set_visible(False)
    figure.supxlabel(f"loss increase, {first} images", fontsize=9)
    figure.supylabel(f"loss increase, {second} images", fontsize=9)
    figure.suptitle("Single-filter lesions", fontsize=10)
    figure.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside right upper", frameon=False, fontsize=8)
    return save_figure(figure, stem)
