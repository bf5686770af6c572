"""AlexNet at any width: torchvision's `AlexNet` (its forward, its module layout and names) with every conv and hidden
FC layer scaled by `width`, and METHOD's initialisation."""

from __future__ import annotations

from torch import nn
from torchvision.models.alexnet import AlexNet as TorchvisionAlexNet

from lightning_modules.scaling import init_weights, scaled

HIDDEN_FC = 4096
# The smallest input every pooling of AlexNet accepts (stride-4 conv, then three 3x3 stride-2 max poolings).
MIN_RESOLUTION = 63


class AlexNet(TorchvisionAlexNet):
    """torchvision's AlexNet with channel counts scaled by `width` (at width 1 exactly torchvision's layers)."""

    def __init__(self, num_classes: int, width: float = 1.0, dropout: float = 0.5):
        nn.Module.__init__(self)
        c1, c2, c3, c4, c5 = (scaled(channels, width) for channels in (64, 192, 384, 256, 256))
        hidden = scaled(HIDDEN_FC, width)
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(c5 * 6 * 6, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )


def alexnet(num_classes: int, width: float = 1.0, dropout: float = 0.5) -> AlexNet:
    """AlexNet with `num_classes` outputs, `width` scaling every conv and hidden FC layer, METHOD's initialisation."""
    model = AlexNet(num_classes, width, dropout)
    init_weights(model, width)
    return model
