"""What a lesion is (METHOD): a conv filter's output map set to exactly zero after its nonlinearity.

`lesioned(model, {layer: filters})` applies lesions with forward hooks on the ReLUs that follow the named
conv layers; the segregation analysis uses it directly, and the lesion engine and its naive reference are
checked against it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from lightning_modules.layer_names import CONV_LAYERS
from lightning_modules.vgg import VGG, filters_per_layer, relu_indices


def check_lesions(model: VGG, lesions: Mapping[str, Sequence[int]]) -> None:
    """Raise ValueError for an unknown layer name or a filter index outside the layer."""
    sizes = filters_per_layer(model)
    for layer, filters in lesions.items():
        if layer not in sizes:
            raise ValueError(f"cannot lesion {layer!r}: conv layers are {', '.join(CONV_LAYERS)}")
        bad = [f for f in filters if not 0 <= int(f) < sizes[layer]]
        if bad:
            raise ValueError(f"{layer} has {sizes[layer]} filters; cannot lesion {bad}")


@contextlib.contextmanager
def lesioned(model: VGG, lesions: Mapping[str, Sequence[int]]) -> Iterator[VGG]:
    """Within the block, `model` runs with the given filters' output maps zeroed after their ReLU.

    `lesions` maps conv layer names (conv1_1 ... conv5_3) to filter indices; forward hooks on the ReLUs
    named by `relu_indices` do the zeroing and are removed on exit.
    """
    check_lesions(model, lesions)
    relus = relu_indices(model)
    handles = []
    for layer, filters in lesions.items():
        if len(filters) == 0:
            continue
        index = torch.as_tensor(sorted({int(f) for f in filters}), dtype=torch.long)
        handles.append(model.features[relus[layer]].register_forward_hook(_zero_channels_hook(index)))
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


def _zero_channels_hook(channels: torch.Tensor):
    """A forward hook replacing the module's output by a copy with `channels` set to zero."""

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        return output.index_fill(1, channels.to(output.device), 0.0)

    return hook
