"""ResNet-18 and ResNet-50 at any width: torchvision's `ResNet` (its blocks, forward, module layout and names) with
every stage's channels scaled by `width`, and METHOD's initialisation (convs Kaiming-normal, BN (1, 0), the output
layer N(0, 0.01 / sqrt(width)))."""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.resnet import ResNet as TorchvisionResNet

from lightning_modules.scaling import init_weights, scaled

DEPTHS: dict[str, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(TorchvisionResNet):
    """torchvision's ResNet with the stem's and every stage's planes scaled by `width` (at width 1 exactly
    torchvision's layers); `_make_layer` and `forward` are torchvision's."""

    def __init__(self, arch: str, num_classes: int, width: float = 1.0):
        nn.Module.__init__(self)
        block, depths = DEPTHS[arch]
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = scaled(64, width), 1, 1, 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, scaled(64, width), depths[0])
        self.layer2 = self._make_layer(block, scaled(128, width), depths[1], stride=2)
        self.layer3 = self._make_layer(block, scaled(256, width), depths[2], stride=2)
        self.layer4 = self._make_layer(block, scaled(512, width), depths[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(scaled(512, width) * block.expansion, num_classes)


def resnet(arch: str, num_classes: int, width: float = 1.0) -> ResNet:
    """The ResNet `arch` (resnet18, resnet50) with `num_classes` outputs and `width`, METHOD's initialisation."""
    model = ResNet(arch, num_classes, width)
    init_weights(model, width)
    return model
