"""How many images and lesions one forward pass of the lesion engine holds, fitted to a memory budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psutil
import torch
from torch import nn

from lightning_modules.vgg import VGG, conv_indices, relu_indices

DEFAULT_BATCH_SIZE = 128


BYTES_PER_FLOAT = 4


@dataclass(frozen=True)
class PassPlan:
    """How one layer's lesions are grouped: images per pass and lesions per pass."""

    images_per_pass: int
    lesions_per_pass: int


def activation_sizes(model: VGG, image_shape: Sequence[int]) -> dict[str, int]:
    """Per image, for each conv layer: floats held per lesion (`<layer>`) and once per image (`<layer>:shared`).

    Per lesion: the lesioned pre-activation of the next linear map, the channel's contribution, their
    difference, and the suffix's two largest activations. Per image: the layer's output, the next map's
    input and its intact pre-activation.
    """
    sizes: dict[int, int] = {}
    hooks = [module.register_forward_hook(_record_numel(sizes, i)) for i, module in enumerate(model.features)]
    try:
        with torch.inference_mode():
            probe = torch.zeros(1, *image_shape, device=next(model.parameters()).device)
            pooled = model.avgpool(model.features(probe))
    finally:
        for hook in hooks:
            hook.remove()
    # Every activation in forward order: the feature maps, the pooled maps, fc6, fc7 and the output.
    outputs = [sizes[i] for i in range(len(model.features))] + [pooled.numel()]
    outputs += [m.out_features for m in model.classifier if isinstance(m, nn.Linear)]
    convs = list(conv_indices(model).values())
    result: dict[str, int] = {}
    for layer, relu in relu_indices(model).items():
        later = [i for i in convs if i > relu]
        pre = later[0] if later else len(model.features) + 1  # position of the next linear map's output
        result[layer] = 3 * outputs[pre] + sum(sorted(outputs[pre:])[-2:])
        result[f"{layer}:shared"] = outputs[relu] + outputs[pre - 1] + outputs[pre]
    return result


def _record_numel(sizes: dict[int, int], index: int):
    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        sizes[index] = output[0].numel()

    return hook


def plan_passes(
    per_lesion_floats: int,
    shared_floats: int,
    num_images: int,
    num_lesions: int,
    batch_size: int | None,
    lesions_per_pass: int | None,
    budget_bytes: int,
) -> PassPlan:
    """Fit a pass (B images x K lesions) into `budget_bytes`; given sizes are used as they are."""
    images = min(batch_size or DEFAULT_BATCH_SIZE, num_images)
    if lesions_per_pass is not None:
        return PassPlan(images, max(1, min(lesions_per_pass, num_lesions)))
    per_image = BYTES_PER_FLOAT * (shared_floats + per_lesion_floats)
    if batch_size is None:
        images = max(1, min(images, budget_bytes // per_image))
    fits = (budget_bytes // images - BYTES_PER_FLOAT * shared_floats) // (BYTES_PER_FLOAT * per_lesion_floats)
    return PassPlan(images, int(max(1, min(fits, num_lesions))))


def layer_plan(
    model: VGG,
    layer: str,
    num_images: int,
    num_lesions: int,
    batch_size: int | None,
    lesions_per_pass: int | None,
    budget_bytes: int,
    image_shape: Sequence[int],
) -> PassPlan:
    """The pass plan of one layer for `model` at `image_shape` (C, H, W) within `budget_bytes`."""
    sizes = activation_sizes(model, image_shape)
    return plan_passes(
        sizes[layer], sizes[f"{layer}:shared"], num_images, num_lesions, batch_size, lesions_per_pass, budget_bytes
    )


def free_memory(device: torch.device) -> int:
    """Free bytes on `device`: GPU memory for CUDA, available RAM otherwise."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def default_budget(device: torch.device) -> int:
    """The default memory budget: half of the device's free memory."""
    return free_memory(device) // 2
