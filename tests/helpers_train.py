"""Tiny synthetic data and configs for the training tests: 2 tasks x 4 classes, 40 px images."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from helpers_data import built_once_per_session, make_tiny_data_dir

from lightning_modules.config import TrainConfig, load_config

ROOT = Path(__file__).resolve().parent.parent
TASKS = ("face", "object")
CLASSES_PER_TASK = 4


# Settings under which DDP on N processes sees, together, exactly the global batches of 1 process: the eval
# transform in file order (FFCV's distributed split hands rank r the samples r, r+N, ...), no dropout, no batch
# norm (its statistics would be per rank). DDP averages the ranks' mean gradients, which equals the 1-process mean
# gradient up to float summation order.
DETERMINISTIC = [
    "trainer.epochs=2",
    "data.augment=false",
    "model.dropout=0.0",
    "model.batch_norm=false",
    "wandb.mode=disabled",
    "data.batch_size=32",
]


def assert_trained_alike(reference: Path, run: Path, steps: int) -> None:
    """The last checkpoints of two DETERMINISTIC runs hold the same weights after `steps` steps, to float summation
    order: summing a batch's gradients in two halves (then averaging across ranks) rounds differently from one sum,
    by about 1e-7 relative per step; over a few dozen SGD steps that stays well inside rtol 1e-4 / atol 1e-6, while
    the weights moved by more than 1e-3 from where they started (agreeing is not trivial)."""
    import torch

    states = [torch.load(path / "checkpoints/last.ckpt", weights_only=True) for path in (reference, run)]
    assert states[0]["global_step"] == states[1]["global_step"] == steps
    for key, expected in states[0]["state_dict"].items():
        torch.testing.assert_close(states[1]["state_dict"][key], expected, rtol=1e-4, atol=1e-6)
    initial = initial_weights(reference)
    change = max((states[0]["state_dict"][f"model.{k}"] - v).abs().max().item() for k, v in initial.items())
    assert change > 1e-3


def initial_weights(run_dir: Path) -> dict:
    """The weights a run started from (same seed, same construction as `train`)."""
    import pytorch_lightning as pl

    from common.io import read_json
    from data_pipeline.label_space import LabelSpace
    from lightning_modules.checkpoint import build_model
    from lightning_modules.config import read_run_config

    config = read_run_config(run_dir)
    pl.seed_everything(config.seed, verbose=False)
    return build_model(LabelSpace.from_dict(read_json(run_dir / "label_space.json")), config.model).state_dict()


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


def kill_after_first_checkpoint(process: subprocess.Popen, run_dir: Path, timeout: float = 300) -> None:
    """SIGKILL a training process once its run directory holds last.ckpt (asserting it had not ended by then)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + timeout
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()


def wandb_records(run_dir: Path) -> list[list[dict]]:
    """Every record of each offline W&B run under `run_dir`/wandb (one list per run), read with `wandb leet inspect`."""
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
    return built_once_per_session(tmp_path_factory, "train_data", build_tiny_data)


def session_untrained_checkpoint(tmp_path_factory, train_per_class: int, test_per_class: int) -> tuple[Path, Path]:
    """`untrained_checkpoint` of these sizes, made once per pytest session and shared (read only) by the modules
    that ask for the same sizes."""
    return built_once_per_session(
        tmp_path_factory,
        f"untrained_{train_per_class}_{test_per_class}",
        lambda root: untrained_checkpoint(root, train_per_class=train_per_class, test_per_class=test_per_class),
    )
