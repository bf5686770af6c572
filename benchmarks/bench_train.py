"""Training throughput: the Lightning loop of `specialize train` against a plain PyTorch loop.

Both loops train the same TaskModule network (same per-task loss and metric bookkeeping, `TaskModule._step`)
with the same SGD settings over the same FFCV training loader (augmented, random order) for the same number of
epochs, on synthetic face+object data (built once into --work). The Lightning side is the real trainer of
`specialize train` (`make_trainer`: checkpoints, CSV logging, no progress bar, W&B off) and is timed from the
start to the end of each training epoch, validation excluded; the plain loop is timed over the same epochs.
The first epoch (numba/FFCV compilation) is a warm-up, not timed. The two loops alternate `--rounds` times
and the best epoch rate of each counts, so load from other processes hurts both alike.
Target: Lightning's overhead at most 5%.

    python -m benchmarks.bench_train [--width 0.25] [--resolution 64] [--batch-size 64] [--epochs 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from data_pipeline.datamodule import TaskDataModule
from data_pipeline.loaders import make_loader
from lightning_modules.config import load_config
from lightning_modules.module import TaskModule
from lightning_modules.train import make_trainer

ROOT = Path(__file__).resolve().parent.parent
TASKS = ["face", "object"]


def synthetic_data(work: Path, train_per_class: int) -> Path:
    """A built face+object data directory (8 classes per task, 64 px), made once."""
    from data_pipeline.build import BuildSettings, ImageCounts, build_dataset
    from data_pipeline.synth import SynthSettings, generate

    data = work / f"data-{train_per_class}"
    if not (data / "manifest.json").is_file():
        images = work / f"images-{train_per_class}"
        generate(
            images,
            SynthSettings(
                tasks=TASKS,
                classes_per_task=8,
                train_per_class=train_per_class,
                test_per_class=4,
                heldout_classes=0,
                size=72,
            ),
        )
        build_dataset(
            {task: images / task for task in TASKS},
            data,
            BuildSettings(pools=("+".join(TASKS),), counts=ImageCounts(test=4, val=1)),
        )
    return data


class EpochTimer(pl.Callback):
    """Wall time of each training epoch, from its start to the end of its last batch (so validation and the
    checkpoints written after it are excluded)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self.seconds.append(time.perf_counter() - self._start)


def lightning_epochs(config, work: Path) -> list[float]:
    """Seconds per training epoch of the `specialize train` Lightning loop."""
    pl.seed_everything(config.seed, verbose=False)
    datamodule = TaskDataModule(
        config.data.dir,
        TASKS,
        batch_size=config.data.batch_size,
        resolution=config.data.resolution,
        num_workers=config.data.num_workers,
        seed=config.seed,
    )
    module = TaskModule(config.to_dict(), datamodule.label_space.to_dict())
    trainer = make_trainer(config, work / f"lightning-{time.time_ns()}")
    timer = EpochTimer()
    trainer.callbacks.append(timer)
    trainer.fit(module, datamodule=datamodule)
    return timer.seconds


def plain_epochs(config) -> list[float]:
    """Seconds per training epoch of a hand-written loop over the same loader, network and optimiser."""
    pl.seed_everything(config.seed, verbose=False)
    datamodule = TaskDataModule(
        config.data.dir,
        TASKS,
        batch_size=config.data.batch_size,
        resolution=config.data.resolution,
        num_workers=config.data.num_workers,
        seed=config.seed,
    )
    module = TaskModule(config.to_dict(), datamodule.label_space.to_dict())
    loader = make_loader(
        datamodule.beton("train"),
        train=True,
        batch_size=config.data.batch_size,
        resolution=config.data.resolution,
        num_workers=config.data.num_workers,
        seed=config.seed,
    )
    optimizer = module.configure_optimizers()["optimizer"]
    module.train()
    seconds = []
    for _ in range(config.trainer.epochs):
        start = time.perf_counter()
        for batch in loader:
            loss = module._step(batch, "train")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        module._metrics.clear()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="per round; the first is a warm-up")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train-per-class", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_train")
    args = parser.parse_args()
    data = synthetic_data(args.work, args.train_per_class)
    config = load_config(
        ROOT / "configs" / "tiny_face_object.yaml",
        [
            f"data.dir={data}",
            f"model.width={args.width}",
            f"data.resolution={args.resolution}",
            f"data.batch_size={args.batch_size}",
            f"trainer.epochs={args.epochs}",
            f"data.num_workers={args.num_workers}",
            "trainer.progress_bar=false",
            "wandb.mode=disabled",
            "model.batch_norm=false",
            "model.dropout=0.5",
        ],
    )
    images = 2 * 8 * args.train_per_class // args.batch_size * args.batch_size  # drop_last
    rates: dict[str, list[float]] = {"plain": [], "lightning": []}
    for _ in range(args.rounds):
        rates["plain"] += [images / s for s in plain_epochs(config)[1:]]
        rates["lightning"] += [images / s for s in lightning_epochs(config, args.work)[1:]]
    best = {name: max(values) for name, values in rates.items()}
    result = {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "width": args.width,
        "resolution": args.resolution,
        "batch_size": args.batch_size,
        "images_per_epoch": images,
        "plain_images_per_s": round(best["plain"], 1),
        "lightning_images_per_s": round(best["lightning"], 1),
        "lightning_overhead_percent": round(100 * (1 - best["lightning"] / best["plain"]), 2),
        "all_epoch_rates": {name: [round(v, 1) for v in values] for name, values in rates.items()},
    }
    print(json.dumps(result, indent=2))
    verdict = "meets" if result["lightning_overhead_percent"] <= 5 else "MISSES"
    print(f"Lightning overhead {result['lightning_overhead_percent']}% {verdict} the <= 5% target")


if __name__ == "__main__":
    main()
