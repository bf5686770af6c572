"""Linear decoding of held-out classes from network activations (the paper's first evidence, Fig. 1).

For every network, every task with held-out classes (classes no network was trained on) and every chosen layer
(default fc7, the penultimate layer): the layer's activations of the task's held-out images
(`analysis.representations.activations`) are decoded by a linear classifier with stratified k-fold cross-validation over
images (scikit-learn: features standardised on each training fold, then logistic regression or a linear SVM).
Reported per fold, and as the mean accuracy with its SEM across folds beside chance (1 / number of classes).

Output directory:
  activations/                      the extracted activations (resumable; `analysis.representations.activations`)
  units/<network>__<task>__<layer>.parquet   finished decodings (resume skips them)
  decoding_folds.parquet            network, task, layer, fold, accuracy, train_images, test_images, converged
  decoding.parquet                  network, task, layer, layer_index, accuracy (mean), sem, chance, classes,
                                    images, folds, classifier
  summary.json, figures/decoding.png|svg (bars at the headline layer, chance lines),
  figures/decoding_by_layer.png|svg (one line per network across layers, when several layers), config.json,
  manifest.json
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.representations.activations import (
    Activations,
    Network,
    extract_activations,
    for_networks,
    layer_order,
    model_artifacts,
    network_hashes,
    split_images,
)
from analysis.representations.settings import DecodingSettings
from common.errors import UserError
from common.io import write_json, write_parquet
from common.ray_runner import WorkUnit, ray_session, run_units
from common.stage import StageDir
from common.wandb_runs import StageLog, data_artifact, figures_in, logging_to, table_artifact
from lightning_modules.layer_names import LAYER_NAMES

HEADLINE_LAYER = "fc7"


def make_classifier(settings: DecodingSettings) -> Any:
    """A scikit-learn pipeline: standardise features (fitted on the training fold), then the linear classifier."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    if settings.classifier == "logistic":
        classifier = LogisticRegression(C=settings.regularisation, max_iter=settings.max_iter)
    else:
        classifier = LinearSVC(C=settings.regularisation, max_iter=settings.max_iter)
    return make_pipeline(StandardScaler(), classifier)


def check_folds(labels: np.ndarray, folds: int, what: str) -> None:
    """UserError when a class has fewer images than folds (stratified folds need one per class per fold)."""
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise UserError(f"{what} has {len(classes)} class; decoding needs at least 2")
    if counts.min() < folds:
        raise UserError(
            f"{what}: class {classes[counts.argmin()]} has only {counts.min()} images for {folds} folds; "
            f"lower --folds to at most {counts.min()} or build more held-out images per class"
        )


def fold_splits(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, test) image indices of each fold: stratified (every class split evenly over the folds), shuffled
    and seeded."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))


def decode(
    features: np.ndarray, labels: np.ndarray, settings: DecodingSettings = DecodingSettings(), what: str = "the data"
) -> pd.DataFrame:
    """Cross-validated accuracy of a linear classifier: one row per fold (fold, accuracy, train_images,
    test_images, converged). Features are (images, ...) and flattened per image."""
    from sklearn.exceptions import ConvergenceWarning

    features = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    check_folds(labels, settings.folds, what)
    rows = []
    for fold, (train, test) in enumerate(fold_splits(labels, settings.folds, settings.seed)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            classifier = make_classifier(settings).fit(features[train], labels[train])
        accuracy = float((classifier.predict(features[test]) == labels[test]).mean())
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        rows.append(
            {
                "fold": fold,
                "accuracy": accuracy,
                "train_images": len(train),
                "test_images": len(test),
                "converged": converged,
            }
        )
    return pd.DataFrame(rows)


def decode_stored(directory: Path, layer: str, settings: DecodingSettings, network: str, task: str) -> pd.DataFrame:
    """`decode` of one stored layer (a Ray task): the fold rows with network, task and layer."""
    activations = Activations(directory)
    labels = activations.images()["label"].to_numpy()
    folds = decode(activations.layer(layer), labels, settings, what=f"{network} {layer} on {task} held-out images")
    return folds.assign(network=network, task=task, layer=layer)[
        ["network", "task", "layer", "fold", "accuracy", "train_images", "test_images", "converged"]
    ]


def summarise(
    folds: pd.DataFrame,
    classes: dict[str, int],
    settings: DecodingSettings,
    layers: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Mean accuracy and SEM across folds per (network, task, layer), beside chance = 1 / classes; layer_index is the
    layer's place among its network's representation layers (`layers`: network -> names in forward order; VGG16's
    for a network not named)."""
    grouped = folds.groupby(["network", "task", "layer"], sort=False)
    summary = grouped.agg(
        accuracy=("accuracy", "mean"),
        sd=("accuracy", "std"),
        folds=("fold", "count"),
        images=("test_images", "sum"),
        converged=("converged", "all"),
    ).reset_index()
    summary["sem"] = summary.pop("sd") / np.sqrt(summary["folds"])
    summary["classes"] = summary["task"].map(classes)
    summary["chance"] = 1.0 / summary["classes"]
    summary["layer_index"] = [
        list((layers or {}).get(network, LAYER_NAMES)).index(layer)
        for network, layer in zip(summary["network"], summary["layer"])
    ]
    summary["classifier"] = settings.classifier
    return summary[
        [
            "network",
            "task",
            "layer",
            "layer_index",
            "accuracy",
            "sem",
            "chance",
            "classes",
            "images",
            "folds",
            "classifier",
            "converged",
        ]
    ]


def heldout_tasks(data_dir: str | os.PathLike, tasks: Sequence[str] | None) -> list[str]:
    """The tasks to decode: those asked for, or every task with held-out classes; UserError when one has none."""
    from data_pipeline.data_dir import DataDir

    data = DataDir(data_dir)
    chosen = list(tasks) if tasks else [task for task in data.task_names if data.heldout_classes(task)]
    lacking = [task for task in chosen if not data.heldout_classes(task)] or ([] if chosen else data.task_names)
    if lacking or not chosen:
        raise UserError(
            f"{data.path} has no held-out classes for task {lacking[0]!r}; decoding needs classes the "
            "networks never saw: rebuild it with `specialize data build ... --heldout-classes 100` "
            "(or `data synth --heldout-classes N` first)"
        )
    return chosen


def check_heldout_folds(data_dir: str | os.PathLike, tasks: Sequence[str], folds: int) -> None:
    """`check_folds` on the held-out image counts of the data directory's manifest, before any work starts."""
    from data_pipeline.data_dir import DataDir

    data = DataDir(data_dir)
    for task in tasks:
        per_class = data.counts(task)["per_class"]["heldout"]
        labels = np.repeat(np.arange(len(per_class)), list(per_class.values()))
        check_folds(labels, folds, f"{task} held-out images")


def headline_layer(layers: Sequence[str], order: Sequence[str] = LAYER_NAMES) -> str:
    """The layer of the bar figure: fc7 when decoded, else the deepest decoded layer (by `order`: the network's
    representation layers in forward order, VGG16's by default)."""
    return HEADLINE_LAYER if HEADLINE_LAYER in layers else max(layers, key=list(order).index)


def run_decoding(
    networks: Sequence[Network],
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: DecodingSettings = DecodingSettings(),
    address: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Decode every task's held-out classes from every network's layers into `out_dir` (see the module docstring);
    resumable, and a finished decoding is returned as it is. Returns the summary table."""
    from analysis.figures import plot_decoding_bars, plot_layer_curves

    data, extraction = str(Path(data_dir).resolve()), for_networks(settings.extraction, networks)
    chosen = heldout_tasks(data, settings.tasks)
    check_heldout_folds(data, chosen, settings.folds)
    image_sets = [split_images(data, task, "heldout") for task in chosen]
    stage = StageDir(
        Path(out_dir),
        "decoding",
        {
            "networks": network_hashes(networks),
            "data": data,
            "tasks": chosen,
            **extraction.result_fields(),
            "decoding": settings.result_fields(),
        },
    ).check()
    if stage.finished:
        return pd.read_parquet(stage.path / "decoding.parquet")
    out = stage.start({"checkpoints": {n.name: str(n.checkpoint.resolve()) for n in networks}})
    with ray_session(address):
        with logging_to(None):  # the extraction is part of this stage's W&B run
            stored = extract_activations(networks, image_sets, out / "activations", extraction, address, progress)
        task_of = {images.name: task for task, images in zip(chosen, image_sets)}
        units = [
            WorkUnit(
                out / "units" / f"{network}__{task_of[set_name]}__{layer}.parquet",
                (activations.directory, layer, settings, network, task_of[set_name]),
            )
            for (network, set_name), activations in stored.items()
            for layer in extraction.layers
        ]
        run_units(decode_stored, units, extraction.resources, "decoding", progress, unit_name="decoding")
    folds = pd.concat([pd.read_parquet(unit.path) for unit in units], ignore_index=True)
    classes = {task: len(images.class_names) for task, images in zip(chosen, image_sets)}
    order = layer_order(networks)
    summary = summarise(folds, classes, settings, order)
    write_parquet(out / "decoding_folds.parquet", folds)
    write_parquet(out / "decoding.parquet", summary)
    layer = headline_layer(extraction.layers, order[networks[0].name])
    plot_decoding_bars(
        summary[summary["layer"] == layer],
        out / "figures" / "decoding",
        title=f"Decoding held-out classes from {layer} ({settings.folds}-fold, {settings.classifier})",
    )
    if len(extraction.layers) > 1:
        panels = {
            f"{task} held-out classes": rows.rename(columns={"accuracy": "value"})
            for task, rows in summary.groupby("task", sort=False)
        }
        plot_layer_curves(
            panels,
            out / "figures" / "decoding_by_layer",
            "decoding accuracy",
            lines={title: float(rows["chance"].iloc[0]) for title, rows in panels.items()},
            line_label="chance",
        )
    write_json(
        out / "summary.json",
        {
            "headline_layer": layer,
            "classifier": settings.classifier,
            "folds": settings.folds,
            "results": summary.to_dict(orient="records"),
        },
    )
    stage.finish(
        "decoding",
        StageLog(
            summary={f"decode/{r.network}/{r.task}/{r.layer}": float(r.accuracy) for r in summary.itertuples()},
            tables={"decoding": summary},
            figures=figures_in(out / "figures"),
            uses=[data_artifact(data), *model_artifacts(networks, stage.identity["networks"])],
            makes=[table_artifact("decoding", out, ["decoding.parquet", "decoding_folds.parquet", "summary.json"])],
        ),
        data=data,
        tasks=chosen,
        seeds={"folds": settings.seed},
        checkpoints={n.name: str(n.checkpoint.resolve()) for n in networks},
        **extraction.result_fields(),
    )
    return summary
