"""VGG (configurations A, B, D, E: torchvision's `vgg11`, `vgg13`, `vgg16`, `vgg19`) at any width, laid out like
torchvision's, with METHOD's initialisation.

VGG16's layer names (conv1_1 ... conv5_3, fc6, fc7, output) come from `layer_names`; every configuration names its
convs `conv<block>_<position>` (`conv_names`). `conv_indices`, `relu_indices` and `fc_indices` find those layers in a
model.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_modules.layer_names import FC_LAYERS
from lightning_modules.scaling import init_weights, scaled

CONFIG_D: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)
CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": CONFIG_D,
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}
HIDDEN_FC = 4096


class VGG(nn.Module):
    """torchvision-style VGG: `features`, `avgpool` (adaptive, 7x7) and `classifier`."""

    def __init__(
        self, features: nn.Sequential, num_classes: int, hidden: int, last_channels: int, dropout: float = 0.5
    ):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(last_channels * 7 * 7, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def make_features(
    width: float = 1.0, batch_norm: bool = False, config: tuple[int | str, ...] = CONFIG_D
) -> nn.Sequential:
    """The feature stack of a configuration (default D, VGG16's 13 convs), each conv followed by (batch norm and)
    ReLU, "M" a 2x2 max pooling."""
    layers: list[nn.Module] = []
    in_channels = 3
    for entry in config:
        if entry == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out_channels = scaled(int(entry), width)
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        in_channels = out_channels
    return nn.Sequential(*layers)


def vgg(arch: str, num_classes: int, width: float = 1.0, batch_norm: bool = False, dropout: float = 0.5) -> VGG:
    """The VGG `arch` (vgg11, vgg13, vgg16, vgg19) with `num_classes` outputs; `width` scales every conv and hidden FC
    layer."""
    features = make_features(width, batch_norm, CONFIGS[arch])
    model = VGG(
        features, num_classes, hidden=scaled(HIDDEN_FC, width), last_channels=scaled(512, width), dropout=dropout
    )
    init_weights(model, width)
    return model


def vgg16(num_classes: int, width: float = 1.0, batch_norm: bool = False, dropout: float = 0.5) -> VGG:
    """VGG16 configuration D with `num_classes` outputs; `width` scales every conv and hidden FC layer."""
    return vgg("vgg16", num_classes, width, batch_norm, dropout)


def conv_indices(model: VGG) -> dict[str, int]:
    """Map conv names (`conv<block>_<position>`, blocks ending at each max pooling: conv1_1 ... conv5_3 in VGG16) to
    the index of that conv in `model.features`."""
    indices: dict[str, int] = {}
    block, position = 1, 0
    for index, module in enumerate(model.features):
        if isinstance(module, nn.MaxPool2d):
            block, position = block + 1, 0
        elif isinstance(module, nn.Conv2d):
            position += 1
            indices[f"conv{block}_{position}"] = index
    return indices


def relu_indices(model: VGG) -> dict[str, int]:
    """Map conv1_1 ... conv5_3 to the index in `model.features` of the ReLU that follows that conv.

    A lesion zeroes this ReLU's output, which is the filter's output map after its nonlinearity.
    """
    relus: dict[str, int] = {}
    for name, conv_index in conv_indices(model).items():
        index = conv_index + 1
        while not isinstance(model.features[index], nn.ReLU):
            index += 1
        relus[name] = index
    return relus


def fc_indices(model: VGG) -> dict[str, int]:
    """Map fc6, fc7 and output to their index in `model.classifier`."""
    linear = [i for i, module in enumerate(model.classifier) if isinstance(module, nn.Linear)]
    return dict(zip(FC_LAYERS, linear))


def filters_per_layer(model: VGG) -> dict[str, int]:
    """Number of filters (output channels) of each conv layer."""
    return {name: model.features[i].out_channels for name, i in conv_indices(model).items()}


def num_outputs(model: VGG) -> int:
    """Number of units of the output layer (the label space's classes)."""
    return model.classifier[fc_indices(model)["output"]].out_features
