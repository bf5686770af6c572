"""Run directories for the report tests, written in seconds without training or Ray.

Every file has the layout and schema its stage writes: configs come from `load_config`, rankings from
`sweeps.ranking`, segregation tables, summaries and figures from the analysis' own functions applied to
generated per-image predictions, and a study's aggregation from `analysis.seeds.aggregate_study`. Only the
numbers are made up (seeded): lesioning a task's top filters hurts that task more than the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from helpers_train import ROOT

from analysis.figures import save_figure
from common.io import write_json, write_parquet
from common.manifest import write_manifest

LAYERS = ("conv1_1", "conv5_3")
FILTERS = {"conv1_1": 4, "conv5_3": 32}  # VGG16 at width 1/16
CLASSES, IMAGES_PER_CLASS, EPOCHS, BOOTSTRAPS = 3, 6, 3, 20
NULL_PARTITIONS = 5  # the permutation null of each analysis (not of its random-task control)


def write_data(directory: Path, tasks: Sequence[str], skipped: int = 0) -> Path:
    """A data directory's manifest: classes and counts per task and split, a pool, `skipped` skipped files."""
    entries = {
        task: {
            "root": f"/images/{task}",
            "format": "split",
            "classes": [f"{task}_{i:03d}" for i in range(CLASSES)],
            "heldout_classes": [],
            "counts": {
                "train": 12 * CLASSES,
                "test": IMAGES_PER_CLASS * CLASSES,
                "heldout": 0,
                "per_class": {
                    "train": {f"{task}_{i:03d}": 12 for i in range(CLASSES)},
                    "test": {f"{task}_{i:03d}": IMAGES_PER_CLASS for i in range(CLASSES)},
                    "heldout": {},
                },
            },
        }
        for task in tasks
    }
    pool = "+".join(tasks[:2])
    write_json(directory / "config.json", {"tasks": {task: f"/images/{task}" for task in tasks}, "seed": 0})
    write_manifest(
        directory / "manifest.json",
        "data",
        seed=0,
        tasks=entries,
        pools={pool: {"tasks": list(tasks[:2]), "counts": {"train": 24 * CLASSES, "test": 12 * CLASSES}}},
        skipped=[
            {
                "path": f"/images/face/train/face_000/broken_{i}.jpg",
                "reason": "cannot decode (truncated)" if i % 2 else "empty file",
            }
            for i in range(skipped)
        ],
        converted=[],
        parameters={},
        hashes={},
    )
    return directory


def write_train(
    directory: Path, config_name: str, data: Path, seed: int = 0, finished: bool = True, name: str | None = None
) -> Path:
    """A training run: config.json (a tiny config), manifest, metrics.csv in Lightning's CSV layout, summary.json."""
    from lightning_modules.config import load_config

    overrides = [f"data.dir={data}", f"seed={seed}", f"trainer.epochs={EPOCHS}", *([f"name={name}"] if name else [])]
    config = load_config(ROOT / "configs" / f"{config_name}.yaml", overrides).to_dict()
    write_json(directory / "config.json", config)
    write_manifest(directory / "manifest.json", "train", seed=seed, data=str(data), tasks=config["tasks"])
    rng = np.random.default_rng(seed)
    rows, last = [], {}
    for epoch in range(EPOCHS if finished else EPOCHS - 1):
        for split in ("val", "train"):
            metrics = {
                f"{split}/{task}/{metric}": value
                for task in config["tasks"]
                for metric, value in (
                    ("loss", 1.8 - 0.4 * epoch + 0.05 * rng.random()),
                    ("top1", 0.3 + 0.2 * epoch + 0.05 * rng.random()),
                    ("top1_own", 0.4 + 0.2 * epoch),
                    ("top5", 0.9),
                )
            }
            rows.append(
                {"epoch": epoch, "step": 2 * epoch + 1, **({"lr": 0.005} if split == "train" else {}), **metrics}
            )
            last.update(metrics)
    pd.DataFrame(rows).to_csv(directory / "metrics.csv", index=False)
    if finished:
        write_json(directory / "summary.json", {"epochs": EPOCHS, "best_val_loss": 1.0, "metrics": last})
    return directory


def write_sweep(directory: Path, checkpoint: Path, data: Path, tasks: Sequence[str], seed: int = 0) -> Path:
    """A lesion sweep: filter_losses.parquet, ranking.parquet (one-shot), config.json, manifest."""
    from sweeps.ranking import oneshot_ranking

    rng = np.random.default_rng(seed)
    rows = [
        {
            "layer": layer,
            "layer_index": 1 if layer == "conv1_1" else 13,
            "filter": f,
            "task": task,
            "loss": 1.0 + rng.exponential(0.2),
            "accuracy": 0.5,
            "intact_loss": 1.0,
            "intact_accuracy": 0.6,
        }
        for layer in LAYERS
        for f in range(FILTERS[layer])
        for task in tasks
    ]
    losses = pd.DataFrame(rows)
    write_parquet(directory / "filter_losses.parquet", losses)
    write_parquet(directory / "ranking.parquet", oneshot_ranking(losses))
    write_json(directory / "config.json", {"checkpoint": str(checkpoint), "settings": {"layers": list(LAYERS)}})
    write_manifest(
        directory / "manifest.json",
        "lesion_sweep",
        checkpoint=str(checkpoint),
        data=str(data),
        images_per_task=12,
        seeds={"images": 0},
        tasks=list(tasks),
        layers=list(LAYERS),
        ranking="oneshot",
        images_split="train",
        transform="eval",
        resolution=32,
    )
    return directory


def predictions(tasks: Sequence[str], seed: int, failed: Sequence[str] = ()) -> pd.DataFrame:
    """Per-image predictions of the intact network (accuracy 0.9; 0 on the `failed` tasks) and of each (layer,
    lesioned task): a task's own lesion hurts it (accuracy 0.3) more than the other's (0.7)."""
    rng = np.random.default_rng(seed)
    conditions = [("intact", "none", 0.0)] + [(layer, task, 0.2) for layer in LAYERS for task in tasks]
    rows = []
    for layer, lesioned, fraction in conditions:
        for offset, task in enumerate(tasks):
            accuracy = (0.0 if task in failed else 0.9) if lesioned == "none" else 0.3 if lesioned == task else 0.7
            for image in range(CLASSES * IMAGES_PER_CLASS):
                label = offset * CLASSES + image // IMAGES_PER_CLASS
                correct = bool(rng.random() < accuracy)
                rows.append(
                    {
                        "layer": layer,
                        "lesioned_task": lesioned,
                        "fraction": fraction,
                        "eval_task": task,
                        "image": image,
                        "class": f"{task}_{label % CLASSES:03d}",
                        "label": label,
                        "prediction": label if correct else (label + 1) % (CLASSES * len(tasks)),
                        "correct": correct,
                        "prediction_within_task": label if correct else label,
                        "correct_within_task": correct,
                    }
                )
    return pd.DataFrame(rows)


def write_segregation(
    directory: Path,
    sweep: Path,
    data: Path,
    tasks: Sequence[str],
    random_tasks: bool = False,
    seed: int = 0,
    failed: Sequence[str] = (),
) -> dict[str, Any]:
    """A segregation analysis of `sweep` with the analysis' own tables, summary.json and figures; returns the
    summary."""
    from analysis.segregation.indices import segregation_tables
    from analysis.segregation.null import null_table, partition_indices, with_null
    from analysis.segregation.run import TABLES, draw_figures, summarise
    from analysis.segregation.settings import SegregationSettings

    analysed = [f"pseudo{i + 1}" for i in range(len(tasks))] if random_tasks else list(tasks)
    frame = predictions(analysed, seed + (7 if random_tasks else 0), failed)
    nulls = 0 if random_tasks else NULL_PARTITIONS
    settings = SegregationSettings(n_bootstraps=BOOTSTRAPS, random_tasks=random_tasks, seed=seed, null_partitions=nulls)
    tables = segregation_tables(frame, analysed, BOOTSTRAPS, seed)
    if nulls:  # a permutation null of partitions whose predictions are drawn like the control's
        pseudo = [f"pseudo{i + 1}" for i in range(len(tasks))]
        drawn = [partition_indices(predictions(pseudo, seed + 10 + i, failed), pseudo, seed) for i in range(nulls)]
        tables["segregation"] = with_null(tables["segregation"], null_table(drawn, analysed, "segregation"))
    write_parquet(directory / "predictions.parquet", frame)
    for name in TABLES:
        write_parquet(directory / f"{name}.parquet", tables[name])
    summary = summarise(tables, analysed, settings, list(LAYERS))
    write_json(directory / "summary.json", summary)
    draw_figures(tables, directory, settings, list(LAYERS), label="random tasks" if random_tasks else "network")
    write_json(directory / "config.json", {"sweep": str(sweep), "random_tasks": random_tasks, "fraction": 0.2})
    write_manifest(
        directory / "manifest.json",
        "segregation",
        sweep=str(sweep.resolve()),
        data=str(data),
        tasks=analysed,
        n_bootstraps=BOOTSTRAPS,
        fractions=[0.2],
    )
    return summary


def write_pair_runs(
    directory: Path,
    train: Path,
    data: Path,
    config_name: str,
    tasks: Sequence[str],
    seed: int = 0,
    control: bool = True,
    name: str | None = None,
) -> None:
    """A dual-task network's training run in `train`, and its lesion/, segregation/ and (with `control`)
    segregation_random/ directories in `directory`."""
    write_train(train, config_name, data, seed, name=name)
    sweep = write_sweep(directory / "lesion", train / "checkpoints" / "last.ckpt", data, tasks, seed)
    write_segregation(directory / "segregation", sweep, data, tasks, seed=seed)
    if control:
        write_segregation(directory / "segregation_random", sweep, data, tasks, random_tasks=True, seed=seed)


def make_demo_dir(root: Path, control: bool = True, skipped: int = 3) -> Path:
    """A directory laid out as `specialize demo` leaves it (with the random-task control the lead is adding)."""
    demo = root / "demo"
    data = write_data(demo / "data", ("face", "object"), skipped=skipped)
    write_manifest(demo / "images" / "manifest.json", "synth", seed=0, images=100)
    for config_name in ("tiny_face", "tiny_object"):
        write_train(demo / "train" / config_name, config_name, data)
    write_pair_runs(
        demo, demo / "train" / "tiny_face_object", data, "tiny_face_object", ("face", "object"), control=control
    )
    return demo


def make_study_dir(root: Path) -> Path:
    """A study: two seeds of face_object (each with its control) and a face control that finished seed 0 only;
    its data directory lies outside the study, as with `specialize study`."""
    from analysis.seeds import aggregate_study
    from common.wandb_runs import WandbTarget

    data = write_data(root / "data", ("face", "object"))
    study = root / "study"
    config = {
        "name": "tiny",
        "seeds": [0, 1],
        "output": str(root),
        "pairs": {"face_object": {"config": "configs/tiny_face_object.yaml"}},
        "controls": {"face": {"config": "configs/tiny_face.yaml"}},
        "overrides": [],
        "analyses": {
            "checkpoint": "best",
            "lesion": {"images_per_task": 12, "ranking": "oneshot"},
            "segregation": {"fraction": 0.2, "n_bootstraps": BOOTSTRAPS},
        },
    }
    write_json(study / "config.json", config)
    rows = []
    for network, config_name, seed in (
        ("face_object", "tiny_face_object", 0),
        ("face_object", "tiny_face_object", 1),
        ("face", "tiny_face", 0),
    ):
        trial = study / "trials" / f"{network}-seed{seed}"
        if network == "face_object":
            write_pair_runs(trial, trial / "train", data, config_name, ("face", "object"), seed=seed, name=network)
        else:
            write_train(trial / "train", config_name, data, seed, name=network)
        tasks = ["face", "object"] if network == "face_object" else ["face"]
        metrics = {f"val/{task}/top1": 0.5 + 0.1 * seed for task in tasks}
        row = {
            "network": network,
            "seed": seed,
            "pair": network == "face_object",
            "directory": str(trial),
            "tasks": tasks,
            "stage": "segregation" if network == "face_object" else "train",
            "best_val_loss": 1.0,
            **metrics,
        }
        write_json(trial / "trial.json", row)
        write_manifest(trial / "manifest.json", "trial", seed=seed, network=network)  # a finished trial
        rows.append({"name": f"{network}-seed{seed}", **row})
    trials = pd.DataFrame(rows)
    write_parquet(study / "trials.parquet", trials)
    aggregate_study(study / "aggregate", trials, 0.2, WandbTarget())
    write_manifest(
        study / "manifest.json", "study", seeds=[0, 1], networks=["face_object", "face"], trials=trials["name"].tolist()
    )
    return study


def write_analysis(directory: Path, kind: str, small_rows: int = 4, big_rows: int = 60) -> Path:
    """A representation analysis as they write it: a summary table, a big per-fold table, summary.json, figures."""
    import matplotlib.pyplot as plt

    summary = pd.DataFrame(
        {
            "network": ["dual"] * small_rows,
            "layer": ["fc7"] * small_rows,
            "accuracy": np.linspace(0.2, 0.8, small_rows),
            "sem": 0.01,
            "chance": 0.2,
        }
    )
    folds = pd.DataFrame({"network": "dual", "fold": np.arange(big_rows), "accuracy": np.linspace(0, 1, big_rows)})
    write_parquet(directory / f"{kind}.parquet", summary)
    write_parquet(directory / f"{kind}_folds.parquet", folds)
    write_json(directory / "summary.json", {"headline_layer": "fc7", "folds": 5, "results": summary.to_dict("records")})
    for stem in (directory / "figures" / f"{kind}_by_layer", directory / "conv5_3_face"):
        figure, axis = plt.subplots(figsize=(4, 3))
        axis.plot([1, 2, 3], [0.2, 0.5, 0.7])
        save_figure(figure, stem)
    write_json(directory / "config.json", {"identity": {"folds": 5}})
    write_manifest(directory / "manifest.json", kind, seeds={"folds": 0})
    return directory


CHROMIUM = "/usr/bin/chromium"  # Debian's browser (scripts/setup_system.sh), never one Playwright downloads
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# Whether an image decoded in full: its last row of pixels is opaque on a canvas (figures have an opaque background;
# the browser draws what it could decode of a truncated PNG and leaves the rest transparent).
DRAWN_IN_FULL = """const drawnInFull = image => {
    const canvas = document.createElement('canvas');
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(image, 0, 0);
    const row = context.getImageData(0, image.naturalHeight - 1, image.naturalWidth, 1).data;
    return row.length > 0 && row.every((value, index) => index % 4 !== 3 || value === 255);
};
"""


def open_in_browser(page_path: Path, screenshot: Path) -> dict[str, Any]:
    """Open a report with file:// in headless chromium, then screenshot the whole page (every <details> opened).

    Returns what rendered: the headings' texts, each image's (complete, naturalWidth, drawn in full), the tables'
    titles and row counts, every request's URL, failed requests and console errors.
    """
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    failed: list[str] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.on("requestfailed", lambda request: failed.append(request.url))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            rendered = page.evaluate(
                "() => {"
                + DRAWN_IN_FULL
                + """return {
                headings: [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')].map(h => h.textContent.trim()),
                images: [...document.images].map(image => [image.complete, image.naturalWidth, drawnInFull(image)]),
                tables: [...document.querySelectorAll('div.table')].map(t => [t.querySelector('h5').textContent,
                                                                               t.querySelectorAll('tbody tr').length]),
            }; }"""
            )
            page.evaluate("() => document.querySelectorAll('details').forEach(details => details.open = true)")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {**rendered, "requests": requests, "failed": failed, "console_errors": errors}
