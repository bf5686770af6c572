"""Per-image predictions of a network with a layer's top-ranked filters lesioned, fanned out with Ray and resumable.

A unit of work is one (layer, lesioned task): the top fraction of that layer's filters in the task's ranking
is lesioned (with `sweeps.lesion.lesioned`) and every task's full test set is classified, once per fraction.
One more unit holds the intact network's predictions. Each finished unit is written atomically to
`<out>/units/<layer>__<task>.parquet`; a rerun skips the units already there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from analysis.indices import INTACT_LAYER, NO_TASK, PREDICTION_COLUMNS
from lightning_modules.vgg import VGG
from specialize.io import write_parquet
from sweeps.lesion import lesioned

DEFAULT_BATCH_SIZE = 256


@dataclass(frozen=True)
class EvalSet:
    """One (pseudo-)task's test images with global labels, each image's class name, and the task's output units."""

    task: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: np.ndarray
    outputs: torch.Tensor


@dataclass(frozen=True)
class Unit:
    """One unit of work: a layer and the task whose top filters are lesioned (or the intact network)."""

    layer: str
    task: str

    @property
    def name(self) -> str:
        """File name stem of the unit's predictions."""
        return f"{self.layer}__{self.task}"


INTACT_UNIT = Unit(INTACT_LAYER, NO_TASK)


def lesion_count(fraction: float, num_filters: int) -> int:
    """Number of filters a fraction of a layer lesions: fraction x filters, rounded half up."""
    return int(math.floor(fraction * num_filters + 0.5))


def top_filters(ranking: pd.DataFrame, layer: str, task: str, fraction: float) -> list[int]:
    """The top `fraction` of `layer`'s filters in `task`'s ranking (rank 0 = most important)."""
    rows = ranking[(ranking["layer"] == layer) & (ranking["task"] == task)].sort_values("rank")
    if rows.empty:
        raise KeyError(f"the ranking has no rows for layer {layer} and task {task!r}")
    return [int(f) for f in rows["filter"].iloc[: lesion_count(fraction, len(rows))]]


def lesion_plan(ranking: pd.DataFrame, units: Sequence[Unit], fractions: Sequence[float]) -> dict[Unit, dict[float, list[int]]]:
    """For each unit, the filters lesioned at each fraction (none for the intact unit)."""
    return {unit: ({0.0: []} if unit == INTACT_UNIT else
                   {fraction: top_filters(ranking, unit.layer, unit.task, fraction) for fraction in fractions})
            for unit in units}


def predict(model: VGG, eval_set: EvalSet, batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 predictions over all outputs and over the task's own outputs (both as global labels)."""
    overall, within = [], []
    with torch.inference_mode():
        for start in range(0, len(eval_set.labels), batch_size):
            logits = model(eval_set.images[start: start + batch_size])
            overall.append(logits.argmax(dim=1))
            within.append(eval_set.outputs[logits[:, eval_set.outputs].argmax(dim=1)])
    return torch.cat(overall).numpy(), torch.cat(within).numpy()


def predictions_frame(unit: Unit, fraction: float, eval_set: EvalSet, overall: np.ndarray, within: np.ndarray) -> pd.DataFrame:
    """The per-image prediction rows of one unit, fraction and evaluated task."""
    labels = eval_set.labels.numpy()
    return pd.DataFrame({
        "layer": unit.layer, "lesioned_task": unit.task, "fraction": float(fraction), "eval_task": eval_set.task,
        "image": np.arange(len(labels)), "class": eval_set.class_names, "label": labels,
        "prediction": overall, "correct": overall == labels,
        "prediction_within_task": within, "correct_within_task": within == labels,
    }, columns=list(PREDICTION_COLUMNS))


def evaluate_unit(model: VGG, eval_sets: Sequence[EvalSet], unit: Unit, filters_by_fraction: Mapping[float, Sequence[int]],
                  batch_size: int = DEFAULT_BATCH_SIZE) -> pd.DataFrame:
    """Predictions on every evaluated task, with the unit's filters lesioned at each fraction."""
    model.eval()
    frames = []
    for fraction, filters in filters_by_fraction.items():
        lesions = {unit.layer: filters} if unit != INTACT_UNIT else {}
        with lesioned(model, lesions):
            for eval_set in eval_sets:
                frames.append(predictions_frame(unit, fraction, eval_set, *predict(model, eval_set, batch_size)))
    return pd.concat(frames, ignore_index=True)


def evaluate_in_process(model: VGG, eval_sets: Sequence[EvalSet], plan: Mapping[Unit, Mapping[float, Sequence[int]]],
                        batch_size: int = DEFAULT_BATCH_SIZE) -> pd.DataFrame:
    """All units' predictions in this process (no Ray, nothing written): for tests and small jobs."""
    return pd.concat([evaluate_unit(model, eval_sets, unit, filters, batch_size) for unit, filters in plan.items()],
                     ignore_index=True)


def unit_path(units_dir: Path, unit: Unit) -> Path:
    """Where a unit's predictions are stored."""
    return units_dir / f"{unit.name}.parquet"


def evaluate_with_ray(model: VGG, eval_sets: Sequence[EvalSet], plan: Mapping[Unit, Mapping[float, Sequence[int]]],
                      units_dir: Path, address: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> pd.DataFrame:
    """Evaluate the units not yet stored in `units_dir` as Ray tasks, writing each as it finishes; return all units.

    Uses the running Ray session, joins the cluster at `address`, or starts a local one.
    """
    from sweeps.distributed import ray_session

    pending = [unit for unit in plan if not unit_path(units_dir, unit).exists()]
    if pending:
        with ray_session(address):
            _run_ray_units(model, eval_sets, plan, pending, units_dir, batch_size)
    return pd.concat([pd.read_parquet(unit_path(units_dir, unit)) for unit in plan], ignore_index=True)


def _run_ray_units(model: VGG, eval_sets: Sequence[EvalSet], plan: Mapping[Unit, Mapping[float, Sequence[int]]],
                   pending: Sequence[Unit], units_dir: Path, batch_size: int) -> None:
    """Submit the pending units, and write each unit's predictions atomically as soon as it returns."""
    import ray

    remote = ray.remote(num_cpus=1, max_retries=3)(evaluate_unit)
    model_ref, sets_ref = ray.put(model), ray.put(list(eval_sets))
    futures = {remote.remote(model_ref, sets_ref, unit, dict(plan[unit]), batch_size): unit for unit in pending}
    with tqdm(total=len(futures), unit="unit", desc="lesioned evaluations") as bar:
        while futures:
            done, _ = ray.wait(list(futures), num_returns=1)
            unit = futures.pop(done[0])
            write_parquet(unit_path(units_dir, unit), ray.get(done[0]))
            bar.update(1)
