"""Multiply-adds of a network's conv and linear maps, and of a lesion's pass from the lesioned layer on.

The benchmarks price whole sweeps and evaluations with it; the evaluation engine uses it to decide, per layer and
lesion size, whether the shortcut (`sweeps.layer_split`) saves enough to pay (`sweeps.evaluation`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lightning_modules.units import filters_per_unit
from sweeps.layer_split import split_at


def module_macs(model: nn.Module, image_shape: Sequence[int]) -> dict[nn.Module, int]:
    """Multiply-adds per image of every conv and linear module, for images of `image_shape` (C, H, W)."""
    macs: dict[nn.Module, int] = {}

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            macs[module] = output[0].numel() * per_output
        else:
            macs[module] = module.in_features * module.out_features

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    hooks = [m.register_forward_hook(count) for m in layers]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *image_shape, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return macs


def lesion_pass_macs(model: nn.Module, layer: str, filters: int, macs: dict[nn.Module, int]) -> tuple[float, float]:
    """Multiply-adds per image of one lesion of `filters` of `layer`'s filters, from the layer on (`macs`:
    `module_macs`): directly (the next linear map and the rest) and by the shortcut (that map on the lesioned
    channels alone, `filters` / the layer's filters of it, and the rest; the direct cost where the unit has no
    shortcut)."""
    split = split_at(model, layer)
    rest = sum(macs[module] for module in split.suffix_modules() if module in macs)
    if split.linear is None:
        return rest, rest
    next_map = macs[split.linear]
    return next_map + rest, next_map * filters / filters_per_unit(model)[layer] + rest
