"""The model registry: every architecture `model.arch` names, how to build it, and what its config may set.

Each is torchvision's definition (its module layout and state-dict names, so torchvision-layout weights load as they
are) with every conv and hidden layer scaled by `model.width` and one output layer over the label space's classes.
The names and rules are free of torch, so that configs and parsers check them cheaply; `build_network` builds one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

VGGS = ("vgg16", "vgg11", "vgg13", "vgg19")
RESNETS = ("resnet18", "resnet50")
ARCHITECTURES: tuple[str, ...] = (*VGGS, "alexnet", *RESNETS)
DEFAULT_ARCH = "vgg16"

# The smallest input resolution each architecture's poolings accept.
MIN_RESOLUTION = {**{arch: 32 for arch in (*VGGS, *RESNETS)}, "alexnet": 63}


def check_model(arch: str, batch_norm: bool, resolution: int) -> None:
    """SettingError (named by its config key) for an unknown arch, a batch-norm variant it lacks, or a resolution
    too small for its poolings."""
    from common.errors import SettingError
    from common.typed_config import check_choice

    check_choice("model.arch", arch, ARCHITECTURES)
    if batch_norm and arch == "alexnet":
        raise SettingError("model.batch_norm", "is true, but alexnet has no batch-norm variant; set it to false")
    if resolution < MIN_RESOLUTION[arch]:
        raise SettingError(
            "data.resolution", f"must be at least {MIN_RESOLUTION[arch]} for {arch} (its poolings), got {resolution}"
        )


def build_network(
    arch: str, num_classes: int, width: float = 1.0, batch_norm: bool = False, dropout: float = 0.5
) -> nn.Module:
    """The network `arch` with `num_classes` outputs at `width`. `batch_norm` chooses the VGGs' variant (ResNets
    always have batch norm, AlexNet never); `dropout` is the VGGs' and AlexNet's (ResNets have none)."""
    if arch in VGGS:
        from lightning_modules.vgg import vgg

        return vgg(arch, num_classes, width=width, batch_norm=batch_norm, dropout=dropout)
    if arch == "alexnet":
        from lightning_modules.alexnet import alexnet

        return alexnet(num_classes, width=width, dropout=dropout)
    if arch in RESNETS:
        from lightning_modules.resnet import resnet

        return resnet(arch, num_classes, width=width)
    raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
