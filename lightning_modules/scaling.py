"""Layer widths scaled by a model's `width`, and METHOD's initialisation: shared by every architecture."""

from __future__ import annotations

from torch import nn


def scaled(channels: int, width: float) -> int:
    """A layer width scaled by `width`, at least 1."""
    return max(1, int(round(channels * width)))


def init_weights(model: nn.Module, width: float = 1.0) -> None:
    """METHOD's initialisation: conv Kaiming-normal (fan_out, relu), linear N(0, 0.01), biases 0, BN (1, 0).

    At reduced width the linear std is 0.01 / sqrt(width), so each FC layer scales its input's magnitude as at
    full width (its fan-in shrinks by `width`); at width 1.0 this is exactly METHOD's N(0, 0.01).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01 / width**0.5)
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)) and module.bias is not None:
            nn.init.zeros_(module.bias)
