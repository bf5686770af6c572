"""What a lesion is (METHOD): a filter's output map of a unit set to exactly zero after its nonlinearity.

`lesioned(model, {unit: filters})` applies lesions with forward hooks on the module that computes each unit alone
(`lightning_modules.units`: the ReLU after a VGG conv; inside a ResNet block the batch norm before the ReLU, since
ReLU(0) = 0; a block for its output); the segregation analysis uses it directly, and the lesion engine and its naive
reference are checked against it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from lightning_modules.units import filters_per_unit, lesion_units


def check_lesions(model: nn.Module, lesions: Mapping[str, Sequence[int]]) -> None:
    """Raise ValueError for an unknown unit name or a filter index outside the unit."""
    sizes = filters_per_unit(model)
    for layer, filters in lesions.items():
        if layer not in sizes:
            raise ValueError(f"cannot lesion {layer!r}: the network's units are {', '.join(sizes)}")
        bad = [f for f in filters if not 0 <= int(f) < sizes[layer]]
        if bad:
            raise ValueError(f"{layer} has {sizes[layer]} filters; cannot lesion {bad}")


@contextlib.contextmanager
def lesioned(model: nn.Module, lesions: Mapping[str, Sequence[int]]) -> Iterator[nn.Module]:
    """Within the block, `model` runs with the given filters' output maps zeroed after their ReLU.

    `lesions` maps unit names (conv1_1 ... conv5_3 in VGG16) to filter indices; forward hooks on each unit's
    `Unit.hook` module do the zeroing and are removed on exit.
    """
    check_lesions(model, lesions)
    units = lesion_units(model)
    handles = []
    for layer, filters in lesions.items():
        if len(filters) == 0:
            continue
        index = torch.as_tensor(sorted({int(f) for f in filters}), dtype=torch.long)
        module = model.get_submodule(units[layer].hook)
        handles.append(module.register_forward_hook(_zero_channels_hook(index)))
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
