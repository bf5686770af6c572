"""How a training run writes and reads its own files through Lightning: checkpoints and metrics.csv.

- `SafeCheckpointIO`: checkpoints are written atomically (`common.io.atomic_path`: a kill or a full disk never
  leaves a partial .ckpt under its name; Lightning's own writer copies a temporary file from /tmp, which is not
  atomic across file systems and leaves a partial file when the disk fills) and read as data only
  (`checkpoint.read_checkpoint`: a crafted file is refused, never run).
- `ResumableCSVLogger`: metrics.csv keeps the rows logged before the checkpoint a run continues from
  (Lightning's CSV logger deletes the file on resume) and drops later ones, which the resumed run logs again;
  it is rewritten atomically at every save, so it is never cut short. Lightning saves the epoch's checkpoint at
  validation end, just before that epoch's training-metrics row is logged; a kill in between loses that row
  (the checkpoint, and everything computed from it, is exact). Saving last.ckpt later in the epoch was tried and
  did not reproduce runs: Lightning skips the plateau scheduler's step in the first epoch resumed from it.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.core.saving import save_hparams_to_yaml
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from common.io import atomic_path
from lightning_modules.checkpoint import read_checkpoint


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with atomic writes and data-only reads (whatever `weights_only` it is asked for)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        """Serialise in memory, then write the bytes under a temporary name renamed onto `path` when complete."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getbuffer())

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Callable | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """The checkpoint's contents on the CPU, tensors and plain data only (UserError otherwise)."""
        return read_checkpoint(path)


class ResumableCSVLogger(CSVLogger):
    """A CSVLogger writing `run_dir/metrics.csv` (and hparams.yaml) that continues the file of a resumed run.

    `resume_step` is the global step of the checkpoint the run continues from (0 for a new run): rows of the
    existing file logged at an earlier step are kept, the others dropped.
    """

    def __init__(self, run_dir: str | os.PathLike, resume_step: int):
        super().__init__(save_dir=run_dir, name="", version="")
        self._resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ResumableExperimentWriter:
        """The writer, created on first use (rank 0 only)."""
        if self._experiment is None:
            self._experiment = ResumableExperimentWriter(self.log_dir, self._resume_step)
        return self._experiment


class ResumableExperimentWriter(ExperimentWriter):
    """Lightning's CSV experiment writer, continuing the rows before `resume_step` and writing atomically."""

    def __init__(self, log_dir: str, resume_step: int):
        super().__init__(log_dir=log_dir)
        self.rows = rows_before(Path(self.metrics_file_path), resume_step)

    def _check_log_dir_exists(self) -> None:
        """Keep an existing metrics.csv (Lightning's writer deletes it); `rows_before` reads what is kept."""

    def save(self) -> None:
        """Rewrite metrics.csv with every row so far, columns sorted, atomically."""
        if not self.metrics:
            return
        self.rows.extend({key: value for key, value in row.items() if value is not None} for row in self.metrics)
        self.metrics = []
        self.metrics_keys = sorted(set().union(*self.rows))
        with atomic_path(self.metrics_file_path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(self.rows)

    def log_hparams(self, params: dict[str, Any]) -> None:
        """Record hyperparameters and write hparams.yaml atomically."""
        self.hparams.update(params)
        with atomic_path(Path(self.log_dir) / self.NAME_HPARAMS_FILE) as tmp:
            save_hparams_to_yaml(tmp, self.hparams)


def last_logged_metrics(path: Path) -> dict[str, float]:
    """Each metric's last value in a metrics.csv (epoch and step aside); empty when there is no file."""
    last: dict[str, float] = {}
    for row in rows_before(path, step=float("inf")):
        last.update({key: float(value) for key, value in row.items() if key not in ("epoch", "step")})
    return last


def rows_before(path: Path, step: float) -> list[dict[str, str]]:
    """The rows of a metrics.csv logged before global step `step` (blank cells left out); none when it is missing."""
    if step <= 0 or not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        {key: value for key, value in row.items() if value not in ("", None)}
        for row in rows
        if row.get("step") and float(row["step"]) < step
    ]
