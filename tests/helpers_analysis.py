"""Known-answer networks for the segregation tests: tiny VGG16s trained on generated two-task images.

Task "face": classes are smooth random colour blobs; task "object": classes are patchy textures, two-tone in each
colour channel.
Each image is its class prototype, randomly shifted, with pixel noise. A tiny single-task VGG16
(width 1/32, 32 px) learns either task's 64 classes to over 90% in about 20 seconds. The many classes put
chance at 1/64, so a lesion that abolishes a task drops its accuracy by about 98%; the narrow width and the
many classes leave few filters a task can do without, so lesioning most of a task's filters abolishes it.

- `joined_network`: two single-task networks side by side in one VGG16 of twice the width, every weight
  matrix block-diagonal, so each filter serves exactly one task (segregation index near 1). The tasks' images
  use separate colour channels and the networks have no biases, so one network's filters see only zeros on
  the other task's images and its outputs stay exactly 0 there: even the lesion ranking, whose loss spans all
  outputs, cannot credit one network's filters to the other task;
- `duplicated_network`: one single-task network whose output layer is repeated for a second task that is
  the same task with its classes renamed, so every filter serves both tasks alike (index near 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.vgg import VGG, conv_indices, fc_indices, vgg16

RESOLUTION = 32
CLASSES = 64
WIDTH = 1 / 32


def _blob_prototypes(generator: torch.Generator) -> torch.Tensor:
    coarse = torch.randn(CLASSES, 3, 4, 4, generator=generator)
    return F.interpolate(coarse, size=RESOLUTION, mode="bicubic", align_corners=False).clamp(-2, 2) / 2


def _patch_prototypes(generator: torch.Generator) -> torch.Tensor:
    coarse = torch.randn(CLASSES, 3, 8, 8, generator=generator).sign()
    return F.interpolate(coarse, size=RESOLUTION, mode="nearest") * 0.8


PROTOTYPES = {"face": (_blob_prototypes, 11), "object": (_patch_prototypes, 12)}
CHANNELS = {"face": [0], "object": [1, 2]}  # each task's images live in their own colour channels


def task_images(task: str, per_class: int, seed: int, noise: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` images of each class of `task` (labels local, 0..CLASSES-1), deterministic by seed."""
    draw, prototype_seed = PROTOTYPES[task]
    prototypes = draw(torch.Generator().manual_seed(prototype_seed))
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    images = prototypes[labels]
    shifts = torch.randint(-2, 3, (len(labels), 2), generator=generator)
    images = torch.stack(
        [torch.roll(image, tuple(shift.tolist()), dims=(1, 2)) for image, shift in zip(images, shifts)]
    )
    images = images + noise * torch.randn(images.shape, generator=generator)
    silent = [c for c in range(3) if c not in CHANNELS[task]]
    images[:, silent] = 0.0
    return images, labels


def bias_free_vgg16() -> VGG:
    """The tiny VGG16 of `train_single_task`, its biases (zero at initialisation) frozen."""
    model = vgg16(CLASSES, width=WIDTH, dropout=0.0)
    for name, parameter in model.named_parameters():
        if name.endswith("bias"):
            parameter.requires_grad_(False)
    return model


def train_single_task(task: str, seed: int = 0, epochs: int = 12) -> VGG:
    """A tiny VGG16 without biases (all zero, frozen) trained on one generated task (Adam, plain torch), in eval mode.

    Without biases, an input that is zero in the task's channels gives exactly zero activations and logits.
    """
    torch.manual_seed(seed)
    model = bias_free_vgg16()
    images, labels = task_images(task, per_class=60, seed=seed + 100)
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels))
        for start in range(0, len(labels), 32):
            batch = order[start : start + 32]
            optimiser.zero_grad()
            F.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimiser.step()
    return model.eval()


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy over all outputs."""
    with torch.inference_mode():
        return float((model(images).argmax(1) == labels).float().mean())


def _block_diagonal(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[[a, 0], [0, b]] over the first two dimensions."""
    out = a.new_zeros(a.shape[0] + b.shape[0], a.shape[1] + b.shape[1], *a.shape[2:])
    out[: a.shape[0], : a.shape[1]] = a
    out[a.shape[0] :, a.shape[1] :] = b
    return out


def _first_layer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """conv1_1 of the joined network: each network's filters read only its own task's colour channels."""
    weight = torch.cat([a, b]).clone()
    for rows, task in ((slice(0, len(a)), "face"), (slice(len(a), None), "object")):
        weight[rows, [c for c in range(3) if c not in CHANNELS[task]]] = 0.0
    return weight


def joined_network(first: VGG, second: VGG) -> VGG:
    """One VGG16 of twice the width computing both networks side by side; outputs = first's then second's."""
    joined = vgg16(2 * CLASSES, width=2 * WIDTH, dropout=0.0).eval()
    with torch.no_grad():
        for position, index in enumerate(conv_indices(joined).values()):
            conv, a, b = joined.features[index], first.features[index], second.features[index]
            weight = _first_layer(a.weight, b.weight) if position == 0 else _block_diagonal(a.weight, b.weight)
            conv.weight.copy_(weight)
            conv.bias.copy_(torch.cat([a.bias, b.bias]))
        for index in fc_indices(joined).values():
            linear, a, b = joined.classifier[index], first.classifier[index], second.classifier[index]
            linear.weight.copy_(_block_diagonal(a.weight, b.weight))
            linear.bias.copy_(torch.cat([a.bias, b.bias]))
    return joined


def duplicated_network(model: VGG, permutation: torch.Tensor) -> VGG:
    """`model` with a second task's outputs appended: output CLASSES + j repeats output permutation[j]."""
    duplicated = vgg16(2 * CLASSES, width=WIDTH, dropout=0.0).eval()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    last = f"classifier.{fc_indices(model)['output']}"
    state[f"{last}.weight"] = torch.cat([state[f"{last}.weight"], state[f"{last}.weight"][permutation]])
    state[f"{last}.bias"] = torch.cat([state[f"{last}.bias"], state[f"{last}.bias"][permutation]])
    duplicated.load_state_dict(state)
    return duplicated
