"""Tiny synthetic data and configs for the training tests: 2 tasks x 4 classes, 40 px images."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from helpers_data import make_tiny_data_dir

from lightning_modules.config import TrainConfig, load_config

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("face", "object")
CLASSES_PER_TASK = 4


def build_tiny_data(root: Path, train_per_class: int = 48, test_per_class: int = 16, val_per_class: int = 8) -> Path:
    """Synthetic face and object images (JPEG) -> a built data directory with the face+object pool, per class
    `train_per_class` training, `val_per_class` validation and `test_per_class` test images; returns it."""
    return make_tiny_data_dir(
        root,
        tasks=TASKS,
        classes=CLASSES_PER_TASK,
        train=train_per_class,
        test=test_per_class,
        heldout=0,
        size=40,
        write_mode="jpg",
        seed=0,
        pools=["+".join(TASKS)],
        val=val_per_class,
    )


def untrained_checkpoint(root: Path, train_per_class: int, test_per_class: int) -> tuple[Path, Path]:
    """A built face+object data directory under `root` and a checkpoint of an untrained tiny model on it."""
    import torch

    from data_pipeline.data_dir import DataDir
    from lightning_modules.module import TaskModule

    data = build_tiny_data(root, train_per_class=train_per_class, test_per_class=test_per_class, val_per_class=1)
    config = tiny_config(data, root / "runs")
    torch.manual_seed(0)
    module = TaskModule(config.to_dict(), DataDir(data).label_space(list(config.tasks)).to_dict())
    checkpoint = root / "tiny.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, checkpoint)
    return data, checkpoint


def tiny_config(data_dir: Path, out: Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """configs/tiny_face_object.yaml on `data_dir`, writing under `out`, W&B offline, no progress bar."""
    base = [f"data.dir={data_dir}", f"output.root={out}", "data.num_workers=1", "trainer.progress_bar=false"]
    return load_config(ROOT / "configs" / "tiny_face_object.yaml", [*base, *overrides])


def wandb_records(run_dir: Path) -> list[list[dict]]:
    """Every record of each offline W&B run under `run_dir`/wandb (one list per run), read with `wandb leet inspect`."""
    import subprocess

    wandb = Path(sys.executable).parent / "wandb"
    runs = []
    for log in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        out = subprocess.run(
            [str(wandb), "leet", "inspect", "--json", str(log)], capture_output=True, text=True, check=True, timeout=120
        ).stdout
        runs.append([json.loads(line) for line in out.splitlines() if line.startswith("{")])
    return runs


def wandb_history(run_dir: Path) -> list[dict]:
    """The history rows of a run's offline W&B logs (all its offline-run folders)."""
    return [
        record["history"]["item"]
        for records in wandb_records(run_dir)
        for record in records
        if record.get("type") == "history"
    ]


def wandb_run(run_dir: Path) -> dict:
    """The latest offline W&B run under `run_dir`/wandb (a resumed run adds one): its run record (group, job type,
    name, config) and summary."""
    records = wandb_records(run_dir)[-1]
    [run] = [record["run"] for record in records if record.get("type") == "run"]
    summary: dict = {}
    for record in records:
        if record.get("type") == "summary":
            summary.update(record["summary"].get("update", {}))
    return {
        "group": run.get("run_group"),
        "job_type": run.get("job_type"),
        "name": run.get("display_name"),
        "config": run["config"]["update"],
        "summary": summary,
    }


def session_tiny_data(tmp_path_factory) -> Path:
    """The tiny data directory, built once per pytest session and shared by the training and cluster tests."""
    root = tmp_path_factory.getbasetemp() / "train_data"
    data = root / "data"
    return data if (data / "manifest.json").is_file() else build_tiny_data(root)
