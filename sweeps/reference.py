"""The naive definitions the engines must match (tests and benchmarks): a lesion sweep, and the per-image answers of
lesioned networks.

They share nothing with the engines but the model and the definition of a lesion (`sweeps.lesions`): for each
lesion, a hook zeroes the filters' output maps and a full forward pass runs over every image in plain batches.

- `reference_lesion_sweep` (held to `sweeps.engine`): each filter alone; the loss is plain `F.cross_entropy`, summed
  per task. With separate heads, each image's loss and answer come from the slice of the logits that holds its
  head, cut out by hand.
- `reference_predictions` (held to `sweeps.evaluation`; the segregation analysis' definition of its predictions):
  for each lesion, the network's top-1 answer and the top-1 among a task's outputs, per image.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.heads import OutputHeads
from lightning_modules.units import filters_per_unit
from sweeps.lesions import lesioned
from sweeps.stimuli import Batch

Images = Mapping[str, tuple[torch.Tensor, torch.Tensor]]
Predictions = tuple[np.ndarray, np.ndarray, np.ndarray]  # labels, the network's top-1, top-1 over the task's outputs
Key = TypeVar("Key", bound=Hashable)


def reference_lesion_sweep(
    model: nn.Module,
    images_by_task: Images,
    layers: Sequence[str] | None = None,
    batch_size: int = 128,
    device: torch.device | str | None = None,
    filters: Mapping[str, Sequence[int]] | None = None,
    heads: OutputHeads = OutputHeads(),
) -> pd.DataFrame:
    """One row per (layer, filter, task): mean loss and top-1 accuracy with that filter lesioned, and intact; layers
    are the network's units (default all; `layer_index` is the unit's position in forward order, from 1).

    `filters` optionally restricts each layer to some filters (the benchmark times a sample). Loss and top-1 are
    over the outputs of each image's head (`heads.sizes`; default all outputs). Runs in float32 without TF32.
    """
    target = torch.device(device) if device is not None else next(model.parameters()).device
    net = copy.deepcopy(model).to(target).eval()
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        bounds = _head_bounds(heads)
        intact = _loss_and_accuracy(net, images_by_task, {}, batch_size, target, bounds)
        sizes = filters_per_unit(net)
        units = list(sizes)
        rows = []
        for layer in layers or units:
            for index in filters[layer] if filters else range(sizes[layer]):
                lesioned_scores = _loss_and_accuracy(net, images_by_task, {layer: [index]}, batch_size, target, bounds)
                for task, (loss, accuracy) in lesioned_scores.items():
                    rows.append(
                        {
                            "layer": layer,
                            "layer_index": units.index(layer) + 1,
                            "filter": int(index),
                            "task": task,
                            "loss": loss,
                            "accuracy": accuracy,
                            "intact_loss": intact[task][0],
                            "intact_accuracy": intact[task][1],
                        }
                    )
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    return pd.DataFrame(rows)


def _head_bounds(heads: OutputHeads) -> list[tuple[int, int]] | None:
    """(first, end) output of every separate head, or None for one softmax over all outputs."""
    if len(heads.sizes) < 2:
        return None
    ends = [sum(heads.sizes[: i + 1]) for i in range(len(heads.sizes))]
    return [(end - size, end) for end, size in zip(ends, heads.sizes)]


def _loss_and_accuracy(
    net: nn.Module,
    images_by_task: Images,
    lesions: Mapping[str, Sequence[int]],
    batch_size: int,
    device: torch.device,
    head_bounds: list[tuple[int, int]] | None,
) -> dict[str, tuple[float, float]]:
    """Per task: mean cross-entropy and top-1 accuracy of `net` with `lesions`, one plain batch at a time."""
    scores = {}
    for task, (images, labels) in images_by_task.items():
        loss_sum, correct = 0.0, 0
        for start in range(0, len(labels), batch_size):
            batch = images[start : start + batch_size].float().to(device)
            targets = labels[start : start + batch_size].long().to(device)
            with torch.inference_mode(), lesioned(net, lesions):
                logits = net(batch)
            for first, end in head_bounds or [(0, logits.shape[1])]:
                rows = (targets >= first) & (targets < end)
                head_logits, head_targets = logits[rows, first:end], targets[rows] - first
                loss_sum += F.cross_entropy(head_logits, head_targets, reduction="sum").item()
                correct += int((head_logits.argmax(dim=1) == head_targets).sum())
        scores[task] = (loss_sum / len(labels), correct / len(labels))
    return scores


def reference_predictions(
    model: nn.Module,
    batches: Iterable[Batch],
    outputs: torch.Tensor,
    lesions: Mapping[Key, Mapping[str, Sequence[int]]],
    heads: OutputHeads = OutputHeads(),
) -> dict[Key, Predictions]:
    """Per lesion (`lesions`: any key -> {unit: filters}): labels, the network's top-1 answers (over all outputs,
    or over each image's head when `heads` are separate) and the top-1 over `outputs` (global labels, ascending),
    one full forward pass of the lesioned network per batch; each batch is read once for all lesions."""
    results: dict[Key, tuple[list, list, list]] = {key: ([], [], []) for key in lesions}
    device = next(model.parameters()).device
    with torch.inference_mode():
        for images, labels in batches:
            for key, lesion in lesions.items():
                with lesioned(model, lesion):
                    logits = model(images.to(device)).cpu()
                for values, batch in zip(
                    results[key], (labels, heads.answer(logits, labels), outputs[logits[:, outputs].argmax(dim=1)])
                ):
                    values.append(batch)
    return {key: tuple(torch.cat(values).numpy() for values in columns) for key, columns in results.items()}
