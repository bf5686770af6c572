"""How many images and lesions one forward pass of the lesion engines holds, fitted to a memory budget.

One planner (`plan_passes`) serves both engines: the sweep (`layer_plan`: one layer's single-filter lesions over its
images) and the evaluation (`evaluation_plan`: every layer's lesions over one batch of test images, the same batch
for all layers, since the intact network walks through them once per batch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil
import torch
from torch import fx, nn

from lightning_modules.units import lesion_units, traced
from sweeps.layer_split import cut_at

DEFAULT_BATCH_SIZE = 128


BYTES_PER_FLOAT = 4


@dataclass(frozen=True)
class PassPlan:
    """How one layer's lesions are grouped: images per pass and lesions per pass."""

    images_per_pass: int
    lesions_per_pass: int


@dataclass(frozen=True)
class EvaluationPlan:
    """How the evaluation engine groups lesions: images per batch (all layers), lesions per pass of each layer."""

    images_per_pass: int
    lesions_per_pass: dict[str, int]

    def peak_bytes(self, model: nn.Module, image_shape: Sequence[int]) -> int:
        """The most memory (bytes) one pass of any layer holds by the plan's own accounting (`evaluation_floats`)."""
        sizes = evaluation_floats(model, image_shape)
        return max(
            (
                BYTES_PER_FLOAT * self.images_per_pass * (sizes[layer][1] + lesions * sizes[layer][0])
                for layer, lesions in self.lesions_per_pass.items()
            ),
            default=0,
        )


def activation_sizes(model: nn.Module, image_shape: Sequence[int]) -> dict[str, int]:
    """Per image, for each lesion unit: floats held per lesion (`<layer>`) and once per image (`<layer>:shared`).

    Per lesion: with the shortcut (`sweeps.layer_split`), the lesioned pre-activation of the next linear map, the
    channel's contribution and their difference; without it, the lesioned copy of the unit's maps; then the copies
    of the context the suffix reads (a skip path), and the suffix's two largest module outputs. Per image: the
    unit's output, the next map's input and its intact pre-activation (with the shortcut), and the context.
    `<layer>:input` is the size of the next map's input (the unit's maps without the shortcut) alone.
    """
    numels = node_numels(model, image_shape)
    result: dict[str, int] = {}
    for layer in lesion_units(model):
        _, cut = cut_at(model, layer)
        context = sum(numels[node] for node in cut.context)
        later = [numels[node] for node in [cut.start, *cut.suffix] if node.op == "call_module"]
        largest = sum(sorted(later)[-2:])
        if cut.linear is not None:
            linear_input = numels[cut.chain[-1] if cut.chain else cut.unit]
            pre = numels[cut.linear]
            result[layer] = 3 * pre + largest + context
            result[f"{layer}:shared"] = numels[cut.unit] + linear_input + pre + context
        else:
            linear_input = numels[cut.unit]
            result[layer] = linear_input + largest + context
            result[f"{layer}:shared"] = linear_input + context
        result[f"{layer}:input"] = linear_input
    return result


def node_numels(model: nn.Module, image_shape: Sequence[int]) -> dict[fx.Node, int]:
    """Per image, the number of values of every tensor node of the model's traced graph, for images of
    `image_shape` (C, H, W)."""
    numels: dict[fx.Node, int] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, node: fx.Node) -> object:
            result = super().run_node(node)
            if isinstance(result, torch.Tensor):
                numels[node] = result[0].numel()
            return result

    with torch.inference_mode():
        Recorder(traced(model)).run(torch.zeros(1, *image_shape, device=next(model.parameters()).device))
    return numels


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
    model: nn.Module,
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


def evaluation_floats(model: nn.Module, image_shape: Sequence[int]) -> dict[str, tuple[int, int]]:
    """Per image, for each conv layer, the floats the evaluation engine holds (per lesion, once per image).

    Per lesion: the sweep's (`activation_sizes`) plus a lesioned copy of the next linear map's input (a lesion of
    several filters zeroes them in a copy of that input, or subtracts their contribution). Per image: the sweep's.
    """
    sizes = activation_sizes(model, image_shape)
    return {layer: (sizes[layer] + sizes[f"{layer}:input"], sizes[f"{layer}:shared"]) for layer in lesion_units(model)}


def evaluation_plan(
    model: nn.Module,
    lesions_per_layer: Mapping[str, int],
    image_shape: Sequence[int],
    budget_bytes: int,
    images_per_pass: int | None = None,
    lesions_per_pass: int | None = None,
) -> EvaluationPlan:
    """The evaluation engine's plan for `lesions_per_layer` (layer -> number of lesions) within `budget_bytes`.

    Images per pass: given, or as many (up to DEFAULT_BATCH_SIZE) as leave room for one lesion of every layer;
    then each layer's lesions per pass fill the budget (`plan_passes`), unless `lesions_per_pass` fixes them.
    """
    sizes = evaluation_floats(model, image_shape)
    images = images_per_pass or min(
        [
            plan_passes(*sizes[layer], DEFAULT_BATCH_SIZE, 1, None, None, budget_bytes).images_per_pass
            for layer in lesions_per_layer
        ],
        default=DEFAULT_BATCH_SIZE,
    )
    return EvaluationPlan(
        images,
        {
            layer: plan_passes(*sizes[layer], images, count, images, lesions_per_pass, budget_bytes).lesions_per_pass
            for layer, count in lesions_per_layer.items()
        },
    )


def free_memory(device: torch.device) -> int:
    """Free bytes on `device`: GPU memory for CUDA, available RAM otherwise."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def default_budget(device: torch.device) -> int:
    """The default memory budget: half of the device's free memory."""
    return free_memory(device) // 2
