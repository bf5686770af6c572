"""Where a training run logs: metrics.csv always, and W&B (offline unless configured; rank 0 logs; a resumed run
continues the same W&B run, also after a killed driver left a W&B service holding it: `common.wandb_runs.start_run`).
The W&B run carries the run's config, its pair (the config's name), tasks and seed, a job type, summary metrics that
dashboards compare (the best (lowest) validation loss and the best top-1 per task), and its lineage: the data
directory it used and, once it finished, its checkpoints as `model` artifacts (by reference unless
`wandb.upload_checkpoints`)."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from pytorch_lightning import Callback

from common.io import atomic_path
from common.output_dir import flatten
from common.redact import redact, redacted_sys_argv
from common.wandb_runs import data_artifact, declare_artifacts, model_artifact, quiet_settings, start_run
from lightning_modules.config import TrainConfig


def make_loggers(config: TrainConfig, run_dir: Path, resume_step: int = 0) -> list[Any]:
    """metrics.csv in the run directory, always (continued from `resume_step`); W&B unless `wandb.mode=disabled`
    (rank 0 logs; same run on resume; secrets redacted from its config, names and recorded command line)."""
    from pytorch_lightning.loggers import WandbLogger
    from pytorch_lightning.utilities import rank_zero_only

    from lightning_modules.run_io import ResumableCSVLogger

    loggers: list[Any] = [ResumableCSVLogger(run_dir, resume_step)]
    if config.wandb.mode == "disabled":
        return loggers
    wandb = redact(config.to_dict()["wandb"])
    wandb_logger = WandbLogger(
        project=wandb["project"],
        group=wandb["group"],
        name=wandb["name"] or run_dir.name,
        job_type=wandb["job_type"],
        tags=wandb["tags"],
        id=wandb_run_id(run_dir),
        resume="allow",
        save_dir=str(run_dir),
        offline=config.wandb.mode == "offline",
        config=redact(wandb_run_config(config)),
        settings=quiet_settings(),
    )
    # Lightning passes `anonymous=None`, which W&B answers with a warning that it has no effect
    getattr(wandb_logger, "_wandb_init", {}).pop("anonymous", None)
    if rank_zero_only.rank == 0:
        with redacted_sys_argv():  # W&B records the command line when its run starts: start it here
            start_run(lambda: wandb_logger.experiment)
    return [*loggers, wandb_logger]


def wandb_run_config(config: TrainConfig) -> dict[str, Any]:
    """The W&B run config: the resolved training config (dotted keys), with its pair (the config's name), tasks and
    seed at the top so that the runs table filters and groups by them."""
    return {**flatten(config.to_dict()), "pair": config.name, "tasks": "+".join(config.tasks), "seed": config.seed}


class WandbSummaryMetrics(Callback):
    """Declare the summaries W&B dashboards compare: the lowest validation loss and each task's best validation
    top-1."""

    def __init__(self, tasks: list[str]):
        self.tasks = list(tasks)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        from pytorch_lightning.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and trainer.is_global_zero:
                logger.experiment.define_metric("val/loss", summary="min")
                for task in self.tasks:
                    logger.experiment.define_metric(f"val/{task}/top1", summary="max")
                    logger.experiment.define_metric(f"val/{task}/top1_own", summary="max")


class EpochLines(Callback):
    """Off a terminal (no progress bar drawn), one line per epoch: its validation loss and top-1 per task."""

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        shown = [key for key in metrics if key == "val/loss" or (key.startswith("val/") and key.endswith("/top1"))]
        scores = ", ".join(f"{key} {float(metrics[key]):.3f}" for key in shown)
        epoch = trainer.current_epoch + 1
        logging.getLogger("specialize").info("epoch %d of %d: %s", epoch, trainer.max_epochs, scores)


def wandb_run_id(run_dir: Path) -> str | None:
    """The run's W&B id, created once by rank 0 and kept in the run directory so a resumed run continues it."""
    from pytorch_lightning.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return None
    path = run_dir / "wandb_id.txt"
    if not path.is_file():
        with atomic_path(path) as tmp:
            tmp.write_text(uuid.uuid4().hex[:12] + "\n")
    return path.read_text().strip()


def log_lineage(trainer: Any, config: TrainConfig) -> None:
    """Declare in the run's W&B run (rank 0) the data directory it used and the checkpoints it made."""
    from pytorch_lightning.loggers import WandbLogger

    from common.layout import CHECKPOINTS, checkpoint_path

    upload = config.wandb.upload_checkpoints
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and trainer.is_global_zero:
            checkpoints = [checkpoint_path(config.run_dir, which) for which in CHECKPOINTS]
            declare_artifacts(
                logger.experiment,
                uses=[data_artifact(config.data.dir)],
                makes=[model_artifact(path, upload=upload) for path in checkpoints if path.is_file()],
            )


def finish_wandb_run(trainer: Any) -> None:
    """Close this process's W&B run (Lightning leaves it open), flushing its logs; the next `train` starts its own."""
    from pytorch_lightning.loggers import WandbLogger

    if trainer.is_global_zero and any(isinstance(logger, WandbLogger) for logger in trainer.loggers):
        import wandb

        wandb.finish()
