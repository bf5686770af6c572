"""The lesion engine: the loss and accuracy of a network with each filter's output map of a unit set to zero.

A lesion zeroes a filter's output map after its nonlinearity (METHOD, `sweeps.lesions`); the units of every
architecture come from its module graph (`lightning_modules.units`: VGG16's conv1_1 ... conv5_3, ResNet blocks and
their convs). Three things make the sweep fast while keeping it exact:

1. The network up to the lesioned unit (the prefix, and whatever else the rest reads that the unit does not change)
   runs once per batch of images and is reused for every filter of that unit.
2. Many lesions share one forward pass: the lesion dimension is folded into the batch, with the number of
   lesions per pass chosen from a memory budget (`sweeps.memory_plan`) or given.
3. Where the unit's only consumer is one conv or linear map, that map is linear in its input, so its
   pre-activation with channel k zeroed is the intact pre-activation minus the contribution of channel k alone: a
   single-channel conv (or a slice of fc6) per lesion instead of a full conv (`sweeps.layer_split`). Elsewhere (a
   ResNet block's output, read by the next block and its skip path) the rest of the network runs on the lesioned
   maps.

The sums are kept per class (`sweeps.class_totals`): per-task losses, and those of any other grouping of the classes,
are sums over them. `sweeps.reference.reference_lesion_sweep` is the naive definition (a hook that zeroes the
channel, one full forward pass per filter); tests and the benchmark hold `lesion_sweep` to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from common.console import hidden
from lightning_modules.heads import OutputHeads
from lightning_modules.units import filters_per_unit, num_outputs
from sweeps.class_totals import ClassTotals, class_intact_frame, class_loss_frame
from sweeps.devices import on_device, tf32
from sweeps.layer_split import LayerSplit, split_at
from sweeps.lesions import check_lesions
from sweeps.memory_plan import PassPlan, default_budget, layer_plan
from sweeps.stimuli import ImagesByTask, Stimuli


def lesion_sweep(model: nn.Module, images_by_task: ImagesByTask, *args: Any, **options: Any) -> pd.DataFrame:
    """Lesion every filter of the layers alone; one row per (layer, filter, task).

    Arguments as `class_lesion_sweep`. Columns: layer, layer_index (1..13), filter, task, loss (mean cross-entropy),
    accuracy (top-1), intact_loss, intact_accuracy, each task's from the sums of its classes. `frame.attrs` holds
    memory_budget_bytes and the pass plan of each layer.
    """
    totals = class_lesion_sweep(model, images_by_task, *args, **options)
    frame = totals.task_losses(Stimuli.from_tasks(images_by_task).grouping())
    frame.attrs.update(totals.attrs)
    return frame


def class_lesion_sweep(
    model: nn.Module,
    images_by_task: ImagesByTask,
    layers: Sequence[str] | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    *,
    memory_budget: int | None = None,
    lesions_per_pass: int | None = None,
    allow_tf32: bool = False,
    progress: bool = False,
    heads: OutputHeads = OutputHeads(),
) -> ClassTotals:
    """Lesion every filter of `layers` (default: every unit of the network, VGG16's 13 conv layers) alone; the loss
    and correct-answer sums per class (label): the table that ranks any grouping of the classes
    (`ClassTotals.task_losses`; `lesion_sweep` gives the tasks of `images_by_task`).

    `images_by_task` maps a task to (images, labels), labels in the model's output space. Loss and top-1 are over
    the outputs of each image's head (`heads`; default one head over all outputs). `memory_budget` (bytes; default
    half the device's free memory) bounds the images and lesions per pass unless `batch_size` / `lesions_per_pass`
    fix them. TF32 stays off unless allowed. `attrs` holds memory_budget_bytes and the pass plan of each layer.
    """
    stimuli = Stimuli.from_tasks(images_by_task)
    with on_device(model, device) as (net, target), tf32(allow_tf32):
        sizes = filters_per_unit(net)
        layers = list(layers or sizes)
        check_lesions(net, {layer: [] for layer in layers})
        budget = memory_budget or default_budget(target)
        plans = {
            layer: layer_plan(
                net,
                layer,
                len(stimuli.labels),
                sizes[layer],
                batch_size,
                lesions_per_pass,
                budget,
                stimuli.images.shape[1:],
            )
            for layer in layers
        }
        total = len(stimuli.labels) * sum(sizes[layer] for layer in layers)
        with tqdm(total=total, unit="img", disable=hidden(progress), desc="lesions") as bar:
            intact = intact_sums(net, stimuli, plans[layers[0]].images_per_pass, heads)
            frames = [
                class_rows(
                    layer,
                    range(sizes[layer]),
                    sweep_layer(net, layer, range(sizes[layer]), stimuli, plans[layer], progress=bar, heads=heads),
                    tuple(sizes),
                )
                for layer in layers
            ]
    totals = ClassTotals.from_frames(pd.concat(frames, ignore_index=True), intact_rows(intact, stimuli), tuple(sizes))
    totals.attrs.update(memory_budget_bytes=int(budget), plans={layer: vars(plan) for layer, plan in plans.items()})
    return totals


def sweep_layer(
    model: nn.Module,
    layer: str,
    filters: Sequence[int],
    stimuli: Stimuli,
    plan: PassPlan,
    base: Sequence[int] = (),
    progress: tqdm | None = None,
    heads: OutputHeads = OutputHeads(),
) -> ClassSums:
    """Loss and correct-answer sums per class with each of `filters` lesioned in `layer`, on top of `base`.

    `base` filters stay lesioned throughout (greedy ranking); `model` must be in eval mode on its device.
    """
    device = next(model.parameters()).device
    split = split_at(model, layer)
    chosen = torch.as_tensor(list(filters), dtype=torch.long, device=device)
    base_channels = torch.as_tensor(list(base), dtype=torch.long, device=device)
    sums = ClassSums(len(chosen), num_outputs(model), heads)
    with torch.inference_mode():
        for images, labels, _ in stimuli.batches(plan.images_per_pass, device):
            activations, *context = split.prefix(images)
            if len(base_channels):
                activations = activations.index_fill(1, base_channels, 0.0)
            lesions = single_lesions(split, activations)
            for start in range(0, len(chosen), plan.lesions_per_pass):
                rows = slice(start, min(start + plan.lesions_per_pass, len(chosen)))
                repeated = [values.repeat_interleave(rows.stop - rows.start, dim=0) for values in context]
                sums.add(rows, split.suffix(lesions(chosen[rows]), *repeated), labels)
                if progress is not None:
                    progress.update((rows.stop - rows.start) * len(labels))
    return sums


def single_lesions(split: LayerSplit, activations: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """For a batch of the unit's maps (B, C, ...), a function from K filters to the suffix's input under each filter's
    lesion alone, (B*K, ...) image-major: by the shortcut (the next map's intact pre-activation minus the channel's
    contribution) where the split has one, else the maps with that channel set to zero."""
    if split.shortcut:
        linear_input = split.lesion_input(activations)
        intact = split.pre_activation(linear_input)
        return lambda filters: (
            intact.unsqueeze(1) - split.channel_contributions(linear_input, filters.unsqueeze(1))
        ).flatten(0, 1)

    def zeroed(filters: torch.Tensor) -> torch.Tensor:
        keep = torch.ones(len(filters), activations.shape[1], dtype=torch.bool, device=activations.device)
        keep[torch.arange(len(filters), device=activations.device), filters] = False
        shape = (1, len(filters), activations.shape[1]) + (1,) * (activations.dim() - 2)
        return torch.where(keep.view(shape), activations.unsqueeze(1), 0.0).flatten(0, 1)

    return zeroed


def intact_sums(model: nn.Module, stimuli: Stimuli, batch_size: int, heads: OutputHeads = OutputHeads()) -> ClassSums:
    """Loss and correct-answer sums per class of the unlesioned `model` (eval mode, on its device)."""
    device = next(model.parameters()).device
    sums = ClassSums(1, num_outputs(model), heads)
    with torch.inference_mode():
        for images, labels, _ in stimuli.batches(batch_size, device):
            sums.add(slice(0, 1), model(images), labels)
    return sums


class ClassSums:
    """Running sums of cross-entropy and correct top-1 answers, per lesion and class (the image's label), each image
    scored over its head."""

    def __init__(self, num_lesions: int, num_classes: int, heads: OutputHeads = OutputHeads()):
        self.loss = torch.zeros(num_lesions, num_classes, dtype=torch.float64)
        self.correct = torch.zeros(num_lesions, num_classes, dtype=torch.float64)
        self.heads = heads

    def add(self, rows: slice, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a pass over B images and K lesions: `logits` (B*K, classes), image-major; `labels` (B,)."""
        lesions = rows.stop - rows.start
        repeated = labels.repeat_interleave(lesions)
        loss = self.heads.loss(logits, repeated).view(-1, lesions)
        correct = (self.heads.answer(logits, repeated) == repeated).view(-1, lesions)
        num_classes = self.loss.shape[1]
        self.loss[rows] += _sum_by_label(loss, labels, num_classes)
        self.correct[rows] += _sum_by_label(correct, labels, num_classes)


def _sum_by_label(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Sum (B, K) values over the images of each label: (K, num_classes), float64, on the CPU."""
    totals = torch.zeros(values.shape[1], num_classes, dtype=torch.float64, device=values.device)
    totals.index_add_(1, labels, values.t().double())
    return totals.cpu()


def class_rows(layer: str, filters: Sequence[int], sums: ClassSums, units: Sequence[str]) -> pd.DataFrame:
    """Per-class rows (`class_loss_frame`) of lesions of one layer: every label of the output space (`units`: the
    network's units in forward order)."""
    layers = np.full(len(sums.loss), layer, dtype=object)
    return class_loss_frame(layers, np.asarray(filters), sums.loss.numpy(), sums.correct.numpy(), units)


def intact_rows(sums: ClassSums, stimuli: Stimuli) -> pd.DataFrame:
    """Per-class rows (`class_intact_frame`) of the unlesioned network: every label of the output space."""
    images = np.bincount(stimuli.labels.numpy(), minlength=sums.loss.shape[1])
    return class_intact_frame(images, sums.loss[0].numpy(), sums.correct[0].numpy())
