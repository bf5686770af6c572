"""Figures of the segregation analysis, as PNG and SVG (matplotlib, Agg backend), and their upload to W&B.

- `plot_segregation_by_layer`: the segregation index per conv layer with its 95% CI band, several curves
  (networks or task pairs) on one axis (paper Fig. 3A / 5B);
- `plot_normalised_performance`: normalised performance of each task after lesioning each task's top filters,
  for one layer (Fig. 2B);
- `plot_drop_heatmap`: proportional drops d(X|Y) across layers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lightning_modules.layer_names import CONV_LAYERS  # noqa: E402
from common.io import atomic_path  # noqa: E402
from common.redact import redact, redacted_sys_argv  # noqa: E402

FORMATS = ("png", "svg")


def save_figure(figure: plt.Figure, stem: str | os.PathLike) -> list[Path]:
    """Write `figure` as stem.png and stem.svg, atomically, and close it; returns the paths."""
    paths = []
    for fmt in FORMATS:
        path = Path(f"{stem}.{fmt}")
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
        paths.append(path)
    plt.close(figure)
    return paths


def plot_segregation_by_layer(curves: Mapping[str, pd.DataFrame], stem: str | os.PathLike,
                              title: str = "Task segregation") -> list[Path]:
    """One line with a CI band per curve; each frame has one row per layer with `layer_index`, si, si_low, si_high."""
    figure, axis = plt.subplots(figsize=(7, 4))
    for label, frame in curves.items():
        frame = frame.sort_values("layer_index")
        line, = axis.plot(frame["layer_index"], frame["si"], marker="o", label=label)
        axis.fill_between(frame["layer_index"], frame["si_low"], frame["si_high"], color=line.get_color(), alpha=0.25)
    axis.axhline(0.0, color="grey", linewidth=0.8)
    axis.set_xticks(range(1, len(CONV_LAYERS) + 1), CONV_LAYERS, rotation=45, ha="right")
    axis.set_ylabel("segregation index")
    axis.set_title(title)
    axis.legend(frameon=False)
    return save_figure(figure, stem)


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
    """Heat map of d(X|Y): one row per (evaluated X, lesioned Y), one column per conv layer; one fraction and scope."""
    table = drops.pivot_table(index=["eval_task", "lesioned_task"], columns="layer_index", values="drop")
    labels = [f"d({x}|{y})" for x, y in table.index]
    figure, axis = plt.subplots(figsize=(8, 0.5 + 0.45 * len(labels)))
    image = axis.imshow(table.to_numpy(), aspect="auto", cmap="viridis", vmin=min(0.0, np.nanmin(table.to_numpy())), vmax=1.0)
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xticks(range(len(table.columns)), [CONV_LAYERS[i - 1] for i in table.columns], rotation=45, ha="right")
    for (row, column), value in np.ndenumerate(table.to_numpy()):
        axis.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value < 0.5 else "black")
    figure.colorbar(image, ax=axis, label="proportional drop")
    axis.set_title("Proportional drop d(evaluated | lesioned)")
    return save_figure(figure, stem)


def wandb_mode(requested: str) -> str:
    """The W&B mode to use: WANDB_MODE when set, else `requested` (offline, online or disabled)."""
    return os.environ.get("WANDB_MODE") or requested


def log_to_wandb(figures: Mapping[str, Path], tables: Mapping[str, pd.DataFrame], project: str | None,
                 mode: str = "offline", config: Mapping | None = None,
                 run_dir: str | os.PathLike | None = None) -> bool:
    """Log PNG figures and tables to the active W&B run, or to a new run in `project` (none: W&B stays off;
    secrets redacted from its config and recorded command line).

    Returns False when nothing was logged: no active run and no project, or the mode is "disabled".
    """
    import wandb

    own_run, mode = wandb.run is None, wandb_mode(mode)
    if own_run and (project is None or mode == "disabled"):
        return False
    if own_run:
        with redacted_sys_argv():  # W&B records the command line when its run starts
            run = wandb.init(project=redact(project), job_type="segregation", config=redact(dict(config or {})),
                             dir=run_dir, mode=mode)
    else:
        run = wandb.run
    run.log({**{f"figures/{name}": wandb.Image(str(path)) for name, path in figures.items()},
             **{f"tables/{name}": wandb.Table(dataframe=frame) for name, frame in tables.items()}})
    if own_run:
        run.finish()
    return True
