"""The naive definition of a lesion sweep, which the engine must match (tests and the lesion benchmark).

It shares nothing with the engine but the model and the definition of a lesion (`sweeps.lesions`): for each
filter, a hook zeroes its output map, a full forward pass runs over every image in plain batches, and the loss is
plain `F.cross_entropy`, summed per task.
"""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from lightning_modules.layer_names import CONV_LAYERS
from lightning_modules.vgg import VGG, filters_per_layer
from sweeps.lesions import lesioned

Images = Mapping[str, tuple[torch.Tensor, torch.Tensor]]


def reference_lesion_sweep(model: VGG, images_by_task: Images, layers: Sequence[str] | None = None,
                           batch_size: int = 128, device: torch.device | str | None = None,
                           filters: Mapping[str, Sequence[int]] | None = None) -> pd.DataFrame:
    """One row per (layer, filter, task): mean loss and top-1 accuracy with that filter lesioned, and intact.

    `filters` optionally restricts each layer to some filters (the benchmark times a sample). Runs in float32
    without TF32.
    """
    target = torch.device(device) if device is not None else next(model.parameters()).device
    net = copy.deepcopy(model).to(target).eval()
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        intact = _loss_and_accuracy(net, images_by_task, {}, batch_size, target)
        sizes = filters_per_layer(net)
        rows = []
        for layer in layers or CONV_LAYERS:
            for index in (filters[layer] if filters else range(sizes[layer])):
                lesioned_scores = _loss_and_accuracy(net, images_by_task, {layer: [index]}, batch_size, target)
                for task, (loss, accuracy) in lesioned_scores.items():
                    rows.append({"layer": layer, "layer_index": CONV_LAYERS.index(layer) + 1, "filter": int(index),
                                 "task": task, "loss": loss, "accuracy": accuracy,
                                 "intact_loss": intact[task][0], "intact_accuracy": intact[task][1]})
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    return pd.DataFrame(rows)


def _loss_and_accuracy(net: VGG, images_by_task: Images, lesions: Mapping[str, Sequence[int]], batch_size: int,
                       device: torch.device) -> dict[str, tuple[float, float]]:
    """Per task: mean cross-entropy and top-1 accuracy of `net` with `lesions`, one plain batch at a time."""
    scores = {}
    for task, (images, labels) in images_by_task.items():
        loss_sum, correct = 0.0, 0
        for start in range(0, len(labels), batch_size):
            batch = images[start: start + batch_size].float().to(device)
            targets = labels[start: start + batch_size].long().to(device)
            with torch.inference_mode(), lesioned(net, lesions):
                logits = net(batch)
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
            correct += int((logits.argmax(dim=1) == targets).sum())
        scores[task] = (loss_sum / len(labels), correct / len(labels))
    return scores
