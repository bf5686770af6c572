"""The LightningModule: a VGG16 over a LabelSpace's global label space, with per-task losses and accuracies.

Tasks are data: every per-task quantity loops over `label_space.tasks`, so one, two or more tasks train alike.
Metrics are summed per task over an epoch, summed across processes, then logged as
`{stage}/{task}/{loss,top1,top5,top1_own,top5_own}` plus `{stage}/loss` (stage = train or val);
"_own" means the prediction is restricted to the task's own outputs.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from data_pipeline.label_space import LabelSpace
from lightning_modules.checkpoint import build_model
from lightning_modules.config import config_from_dict
from lightning_modules.heads import OutputHeads

METRICS = ("loss", "top1", "top5", "top1_own", "top5_own")
RNG_KEY = "specialize_rng_states"
STEP_LOSS = "train/batch_loss"  # each step's loss, for the progress bar and curves: not one of a run's final metrics


def own_output_mask(label_space: LabelSpace) -> torch.Tensor:
    """Boolean [tasks, classes]: row t is True on task t's outputs."""
    mask = torch.zeros(len(label_space.tasks), label_space.total_classes, dtype=torch.bool)
    for row, task in enumerate(label_space.tasks):
        mask[row, label_space.output_slice(task)] = True
    return mask


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """1.0 where the label is among the top-k logits (k capped at the number of outputs)."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(dim=1).float()


class TaskMetrics:
    """Per-task sums of the METRICS and sample counts, accumulated over an epoch."""

    def __init__(self, num_tasks: int, device: torch.device):
        self.sums = torch.zeros(num_tasks, len(METRICS), device=device, dtype=torch.float64)
        self.counts = torch.zeros(num_tasks, device=device, dtype=torch.float64)

    def update(self, task_index: torch.Tensor, values: torch.Tensor) -> None:
        """Add per-sample metric rows `values` [N, len(METRICS)] to their tasks."""
        self.sums.index_add_(0, task_index, values.double())
        self.counts.index_add_(0, task_index, torch.ones_like(task_index, dtype=torch.float64))


class TaskModule(pl.LightningModule):
    """Trains a VGG16 on the tasks of `label_space` (a LabelSpace dict) with the resolved training `config` (a dict)."""

    def __init__(self, config: dict[str, Any], label_space: dict[str, Any]):
        super().__init__()
        self.save_hyperparameters()
        self.label_space = LabelSpace.from_dict(label_space)
        self.config = config_from_dict(config)
        self.heads = OutputHeads.of(self.label_space, self.config.model.heads)
        self.channels_last = self.config.trainer.channels_last
        self.model = build_model(self.label_space, self.config.model)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.register_buffer("own_mask", own_output_mask(self.label_space), persistent=False)
        self._metrics: dict[str, TaskMetrics] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        task_index = self.label_space.task_of(labels)
        losses = self.heads.loss(logits, labels)
        with torch.no_grad():
            own_logits = logits.detach().masked_fill(~self.own_mask[task_index], float("-inf"))
            values = torch.stack(
                [
                    losses.detach(),
                    topk_hits(logits.detach(), labels, 1),
                    topk_hits(logits.detach(), labels, 5),
                    topk_hits(own_logits, labels, 1),
                    topk_hits(own_logits, labels, 5),
                ],
                dim=1,
            )
            self._stage_metrics(stage).update(task_index, values)
        return losses.mean()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        self.log(STEP_LOSS, loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._log_epoch_metrics("val")

    def _stage_metrics(self, stage: str) -> TaskMetrics:
        """This epoch's accumulator for `stage`, created at its first batch (also when resuming mid-epoch)."""
        if stage not in self._metrics:
            self._metrics[stage] = TaskMetrics(len(self.label_space.tasks), self.device)
        return self._metrics[stage]

    def _log_epoch_metrics(self, stage: str) -> None:
        """Sum the epoch's per-task sums over processes and log means per task and overall."""
        metrics = self._metrics.pop(stage, None) or TaskMetrics(len(self.label_space.tasks), self.device)
        sums = self.trainer.strategy.reduce(metrics.sums, reduce_op="sum")
        counts = self.trainer.strategy.reduce(metrics.counts, reduce_op="sum")
        logged = {f"{stage}/loss": sums[:, 0].sum() / counts.sum().clamp(min=1)}
        for row, task in enumerate(self.label_space.tasks):
            for column, metric in enumerate(METRICS):
                logged[f"{stage}/{task}/{metric}"] = sums[row, column] / counts[row].clamp(min=1)
        self.log_dict({k: v.float() for k, v in logged.items()}, prog_bar=False, sync_dist=False)
        self.log(f"{stage}_loss", logged[f"{stage}/loss"].float(), prog_bar=True, logger=False, sync_dist=False)

    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.config.optim
        optimizer = torch.optim.SGD(
            self.parameters(), lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=optim.plateau_factor, patience=optim.plateau_patience
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss", "interval": "epoch"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the Python, NumPy and torch RNG states so a resumed run draws the same random numbers."""
        name, keys, position, has_gauss, cached = np.random.get_state()
        checkpoint[RNG_KEY] = {  # tensors and plain types only, so that torch.load(weights_only=True) reads it
            "python": random.getstate(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the RNG states saved by `on_save_checkpoint`."""
        states = checkpoint.get(RNG_KEY)
        if states is None:
            return
        random.setstate(states["python"])
        name, keys, position, has_gauss, cached = states["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        torch.set_rng_state(states["torch"])
        if states["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
