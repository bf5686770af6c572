"""`train(config) -> run_dir`: one Lightning run, single- or multi-task, on 1..N processes, resumable.

Run directory (`output.root/run_name`, a stage directory: `common.stage`): config.json (the resolved config and the
run's identity), config.yaml (the resolved config), label_space.json, checkpoints/{best,last}.ckpt, metrics.csv
(CSVLogger, always), wandb/ (W&B, offline unless configured), and when the run completes summary.json (final
per-task metrics), then manifest.json.

Resuming: a run directory that already holds a checkpoint is continued from its newest complete one (last.ckpt, or
hpc_ckpt_N.ckpt written on SIGUSR1 under Slurm, see preemption.py; best.ckpt when those are cut short), so
rerunning the same command, `--resume RUN_DIR` and a requeued Slurm job all continue where the run stopped, with
optimiser, scheduler, loop and RNG state, and metrics.csv keeps the rows logged before that checkpoint. A finished
run (its manifest is written and its summary.json covers `trainer.epochs`) is left as it is. Resuming from an
epoch-end checkpoint reproduces the uninterrupted run, augmentation included (its draws depend only on seed, epoch,
rank and sample: data_pipeline/augment.py); a SIGUSR1 checkpoint saved mid-epoch restarts that epoch's data order.
Validation
(learning-rate plateau, best.ckpt) uses the data's val split, never its test split. Checkpoints are written
atomically and read as data only (`run_io.SafeCheckpointIO`); secrets never reach the config dumps,
hyperparameters or W&B (`common.redact`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.console import on_terminal
from common.errors import UserError
from common.io import file_sha256, read_json, write_json
from common.layout import CHECKPOINT_DIR, CHECKPOINTS, MANIFEST_FILE, checkpoint_path
from common.output_dir import flatten
from common.redact import redact
from common.stage import StageDir
from data_pipeline.data_dir import DataDir
from data_pipeline.label_space import LabelSpace
from lightning_modules.config import TrainConfig, write_config
from lightning_modules.loggers import EpochLines, WandbSummaryMetrics, finish_wandb_run, log_lineage, make_loggers

# Keys that may change when a run is continued: they change neither the model nor the data it sees (where the run
# lives neither: `--resume RUN_DIR` names it by its directory).
RESUMABLE_KEYS = frozenset(
    {
        "trainer.epochs",
        "trainer.devices",
        "trainer.num_nodes",
        "trainer.accelerator",
        "trainer.strategy",
        "trainer.progress_bar",
        "data.num_workers",
        "data.os_cache",
        "data.dir",
        "output.root",
        "output.run_name",
        "wandb.mode",
        "wandb.upload_checkpoints",
    }
)


def train(config: TrainConfig, callbacks: Sequence[Any] = ()) -> Path:
    """Train (or continue) the run described by `config`; returns the run directory.

    A run that already finished (its summary.json covers `trainer.epochs`) is left as it is. `callbacks` are added
    to the Trainer's own (e.g. Ray Tune's report callback).
    """
    import pytorch_lightning as pl

    from lightning_modules.module import TaskModule

    # epoch metrics are summed across ranks in TaskModule before logging; Lightning's advice to sync them is moot
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\(.*sync_dist=True")
    run_dir = config.run_dir
    data_dir = DataDir(config.data.dir)
    label_space = label_space_for(data_dir, config)
    stage = run_stage(run_dir, config, label_space.to_dict())
    if stage.finished and finished_epochs(run_dir) >= config.trainer.epochs:
        return run_dir
    pl.seed_everything(config.seed, workers=True, verbose=False)
    module = TaskModule(redact(config.to_dict()), label_space.to_dict())
    checkpoint = latest_checkpoint(run_dir)
    resume_step = checkpoint_step(checkpoint)
    trainer = make_trainer(config, run_dir, callbacks, resume_step)
    if trainer.is_global_zero:
        stage.start(redact(config.to_dict()))
        write_config(config, run_dir)
        write_json(run_dir / "label_space.json", label_space.to_dict())
    datamodule = make_datamodule(config, trainer.world_size)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
        if not trainer.interrupted:
            log_lineage(trainer, config)
    finally:  # also when preempted (`preemption.Preempted` raised on SIGUSR1 after saving a checkpoint)
        finish_wandb_run(trainer)
    if trainer.is_global_zero and not trainer.interrupted:
        write_summary(run_dir, trainer)
        stage.finish(
            "train",
            seed=config.seed,
            data=str(config.data.dir),
            data_manifest_sha256=file_sha256(Path(config.data.dir) / MANIFEST_FILE),
            world_size=config.world_size,
            tasks=list(config.tasks),
            slurm_job_id=os.environ.get("SLURM_JOB_ID"),
        )
    return run_dir


def label_space_for(data_dir: DataDir, config: TrainConfig) -> LabelSpace:
    """The LabelSpace of the configured tasks; UserError on unknown tasks or classes that do not match the config."""
    try:
        label_space = data_dir.label_space(config.tasks)
    except UserError as error:
        raise UserError(f"config key tasks: {error}") from None
    for task, expected in config.data.classes.items():
        if task not in config.tasks:
            raise UserError(f"config key data.classes.{task} names a task not in tasks ({', '.join(config.tasks)})")
        if label_space.num_classes(task) != expected:
            raise UserError(
                f"the data in {config.data.dir} has {label_space.num_classes(task)} classes for task {task!r} "
                f"but data.classes.{task}={expected}; rebuild the data or fix the config"
            )
    data_dir.check_labels(config.tasks, "train")
    data_dir.tasks_beton(config.tasks, "val")  # training watches the val split: refuse data built without one
    return label_space


def run_identity(config: TrainConfig, label_space: dict[str, Any]) -> dict[str, Any]:
    """What defines a run: its config, less the keys that may change when it is continued, and its classes."""
    kept = {key: value for key, value in flatten(config.to_dict()).items() if key not in RESUMABLE_KEYS}
    return {**kept, "label_space": label_space}


def run_stage(run_dir: Path, config: TrainConfig, label_space: dict[str, Any]) -> StageDir:
    """The run directory as a stage, checked: a run whose config or classes differ from this one is refused."""
    return StageDir(
        run_dir,
        "training run",
        run_identity(config, label_space),
        "continue it unchanged with --resume, set output.run_name to start a new run, "
        "or point data.dir at the data the run used",
    ).check()


def latest_checkpoint(run_dir: Path) -> str | None:
    """The newest complete checkpoint to continue from (last.ckpt or a SIGUSR1 hpc_ckpt_N.ckpt; best.ckpt if those
    are cut short), or None. A checkpoint cut short (a copy, a crash of an older version) is passed over with a
    warning; it is overwritten by the next save."""
    from lightning_modules.checkpoint import is_complete_checkpoint

    candidates = [checkpoint_path(run_dir, "last"), *run_dir.glob("hpc_ckpt_*.ckpt"), checkpoint_path(run_dir, "best")]
    existing = sorted((path for path in candidates if path.is_file()), key=lambda path: -path.stat().st_mtime)
    for path in existing:
        if is_complete_checkpoint(path):
            return str(path)
        warnings.warn(
            f"checkpoint {path} is cut short (incomplete file); continuing from an older one if any", stacklevel=2
        )
    return None


def finished_epochs(run_dir: Path) -> int:
    """Epochs a finished run trained (its summary.json), 0 when it has not finished."""
    summary = run_dir / "summary.json"
    return int(read_json(summary)["epochs"]) if summary.is_file() else 0


def checkpoint_step(checkpoint: str | None) -> int:
    """The global step a checkpoint was saved at (0 for none), read without loading its tensors."""
    from lightning_modules.checkpoint import read_checkpoint

    return int(read_checkpoint(checkpoint, mmap=True).get("global_step", 0)) if checkpoint else 0


def make_trainer(config: TrainConfig, run_dir: Path, extra_callbacks: Sequence[Any] = (), resume_step: int = 0) -> Any:
    """A Lightning Trainer with atomic, data-only checkpoints, loggers (metrics.csv continued from `resume_step`),
    progress bar, Slurm requeue on SIGUSR1, and `extra_callbacks`."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.plugins.environments import SLURMEnvironment

    from lightning_modules.preemption import SaveOnSignal
    from lightning_modules.run_io import SafeCheckpointIO

    trainer_config = config.trainer
    # Two callbacks: Lightning's save_last only writes last.ckpt in epochs that also improve the best one.
    best = ModelCheckpoint(
        dirpath=run_dir / CHECKPOINT_DIR,
        filename=CHECKPOINTS[0],
        monitor="val/loss",
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
    )
    last = ModelCheckpoint(
        dirpath=run_dir / CHECKPOINT_DIR,
        filename=CHECKPOINTS[1],
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
    )
    callbacks: list[Any] = [best, last, WandbSummaryMetrics(config.tasks), *extra_callbacks]
    if not (trainer_config.progress_bar and on_terminal()):
        callbacks.append(EpochLines())
    plugins: list[Any] = [SafeCheckpointIO()]
    if SLURMEnvironment.detect():  # pre-emption is ours (preemption.py), not Lightning's in-handler save + requeue
        plugins.append(SLURMEnvironment(auto_requeue=False))
        callbacks.append(SaveOnSignal(run_dir))
    return pl.Trainer(
        default_root_dir=run_dir,
        max_epochs=trainer_config.epochs,
        accelerator=trainer_config.accelerator,
        devices=trainer_config.devices,
        num_nodes=trainer_config.num_nodes,
        strategy=trainer_config.strategy,
        precision=trainer_config.precision,
        logger=make_loggers(config, run_dir, resume_step),
        callbacks=callbacks,
        plugins=plugins,
        enable_progress_bar=trainer_config.progress_bar and on_terminal(),
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        log_every_n_steps=10,
        enable_model_summary=False,
    )


def make_datamodule(config: TrainConfig, world_size: int) -> Any:
    """The FFCV DataModule for the configured tasks, loading `batch_size / world_size` images per process."""
    from data_pipeline.datamodule import TaskDataModule

    return TaskDataModule(
        config.data.dir,
        list(config.tasks),
        batch_size=config.data.batch_size // world_size,
        resolution=config.data.resolution,
        num_workers=config.data.num_workers,
        seed=config.seed,
        os_cache=config.data.os_cache,
        augment=config.data.augment,
    )


def write_summary(run_dir: Path, trainer: Any) -> None:
    """Final epoch metrics and checkpoint paths as summary.json. When this process trained nothing (the run was
    killed after its last checkpoint, before its summary), the metrics are the last ones logged in metrics.csv. The
    last step's loss is left out: a killed run's metrics.csv may have lost it, and it is no final metric."""
    from lightning_modules.module import STEP_LOSS
    from lightning_modules.run_io import last_logged_metrics

    best, last = trainer.checkpoint_callbacks
    metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if "/" in key or key == "lr"}
    metrics = metrics or last_logged_metrics(run_dir / "metrics.csv")
    metrics.pop(STEP_LOSS, None)
    write_json(
        run_dir / "summary.json",
        {
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "best_checkpoint": best.best_model_path,
            "last_checkpoint": last.best_model_path,
            "best_val_loss": float(best.best_model_score) if best.best_model_score is not None else None,
            "metrics": metrics,
        },
    )
