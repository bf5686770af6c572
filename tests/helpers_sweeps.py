"""Tiny models and images for the sweep tests: random weights scaled so that single lesions matter."""

from __future__ import annotations

import torch
from torch import nn

from lightning_modules.architectures import MIN_RESOLUTION, build_network
from lightning_modules.vgg import VGG, vgg16

NUM_CLASSES = 6
RESOLUTION = 32


def tiny_vgg(seed: int = 0, batch_norm: bool = False, width: float = 1 / 16) -> VGG:
    """vgg16(6 classes, `width`) with He-scaled linear weights (and random BN statistics), in eval mode."""
    torch.manual_seed(seed)
    return randomised(vgg16(NUM_CLASSES, width=width, batch_norm=batch_norm))


def tiny_network(arch: str, seed: int = 0, batch_norm: bool = False, width: float = 1 / 16) -> nn.Module:
    """The registry's `arch` (6 classes, `width`) randomised as `tiny_vgg`, in eval mode."""
    torch.manual_seed(seed)
    return randomised(build_network(arch, NUM_CLASSES, width=width, batch_norm=batch_norm))


def resolution(arch: str) -> int:
    """The tests' image size for `arch`: 32 px, or the smallest multiple of 32 its poolings accept."""
    return max(RESOLUTION, -(-MIN_RESOLUTION[arch] // 32) * 32)


def randomised(model: nn.Module) -> nn.Module:
    """`model` with He-scaled linear weights, random biases and BN statistics, in eval mode."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.uniform_(module.bias, -0.1, 0.1)
        elif isinstance(module, nn.Conv2d) and module.bias is not None:
            nn.init.uniform_(module.bias, -0.1, 0.1)
        elif isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
    return model.eval()


def tiny_images(
    seed: int = 1, counts: dict[str, int] | None = None, size: int = RESOLUTION
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Random images and labels for two tasks, labels in one 6-class output space (task a: 0-2, b: 3-5)."""
    generator = torch.Generator().manual_seed(seed)
    counts = counts or {"a": 10, "b": 7}
    data = {}
    for offset, (task, n) in zip((0, 3), counts.items()):
        images = torch.randn(n, 3, size, size, generator=generator)
        labels = torch.randint(0, 3, (n,), generator=generator) + offset
        data[task] = (images, labels)
    return data


def centred(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """`model` with its output biases shifted so that every class's mean logit over `images` is 0: random weights
    alone give nearly every image the same answer; centred, the answers depend on the image and on lesions."""
    output = [module for module in model.modules() if isinstance(module, nn.Linear)][-1]
    with torch.inference_mode():
        output.bias -= model(images).mean(dim=0)
    return model
