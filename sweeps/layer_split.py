"""A VGG cut around one conv layer's ReLU, so that a lesion of that layer costs only the next linear map per filter.

The next linear map (the next conv, or fc6 after the last conv) is linear in its input: its pre-activation with
channel k zeroed is the intact pre-activation minus the contribution of channel k alone (of a set of channels,
for a lesion of several filters). Max- and average pooling between the ReLU and that map act per channel and keep a
zeroed channel at zero, so they run once, unlesioned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.vgg import VGG, conv_indices, relu_indices

# Pooling and similar per-channel maps allowed between a lesioned ReLU and the next linear map: each maps
# an all-zero channel to an all-zero channel and mixes no channels.
CHANNELWISE_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Identity, nn.Dropout)


@dataclass(frozen=True)
class LayerSplit:
    """A VGG cut around one conv layer's ReLU: prefix -> per-channel maps -> next linear map -> suffix."""

    prefix: nn.Module  # input -> the layer's output maps after ReLU
    channelwise: nn.Module  # pooling between the ReLU and the next linear map
    linear: nn.Conv2d | nn.Linear  # the next conv, or fc6 after the last conv
    suffix: nn.Module  # the next linear map's pre-activation -> logits

    @property
    def flattens(self) -> bool:
        """True when the next linear map is fc6, which takes the flattened feature maps."""
        return isinstance(self.linear, nn.Linear)

    def lesion_input(self, activations: torch.Tensor) -> torch.Tensor:
        """The per-channel maps applied to the layer's output: the input of the next linear map, unflattened."""
        return self.channelwise(activations)

    def pre_activation(self, linear_input: torch.Tensor) -> torch.Tensor:
        """The next linear map's output (with bias) on the intact input."""
        return self.linear(torch.flatten(linear_input, 1) if self.flattens else linear_input)

    def channel_contributions(self, linear_input: torch.Tensor, channel_sets: torch.Tensor) -> torch.Tensor:
        """What each set of channels (a row of `channel_sets`, (K, m)) alone adds to the next pre-activation:
        (B, K, *pre-activation shape). One channel per set is the sweep's single-filter lesion."""
        sets, size = channel_sets.shape
        channels = channel_sets.reshape(-1)
        selected = linear_input.index_select(1, channels)
        if self.flattens:
            weight = self.linear.weight.view(self.linear.out_features, linear_input.shape[1], -1)
            per_set = weight.index_select(1, channels).view(self.linear.out_features, sets, -1)
            return torch.einsum("bks,hks->bkh", selected.reshape(len(selected), sets, -1), per_set)
        conv = self.linear
        weight = conv.weight.index_select(1, channels).view(conv.out_channels, sets, size, *conv.kernel_size)
        weight = weight.transpose(0, 1).reshape(-1, size, *conv.kernel_size)
        out = F.conv2d(selected, weight, None, conv.stride, conv.padding, conv.dilation, groups=sets)
        return out.view(out.shape[0], sets, conv.out_channels, *out.shape[2:])


def split_at(model: VGG, layer: str) -> LayerSplit:
    """Cut `model` around `layer`'s ReLU (see LayerSplit); modules are shared, not copied."""
    relu = relu_indices(model)[layer]
    convs = [i for i in conv_indices(model).values() if i > relu]
    tail = nn.Sequential(model.avgpool, nn.Flatten(1))
    if convs:
        nxt = convs[0]
        channelwise = model.features[relu + 1 : nxt]
        linear = model.features[nxt]
        suffix = nn.Sequential(*model.features[nxt + 1 :], *tail, *model.classifier)
    else:
        channelwise = nn.Sequential(*model.features[relu + 1 :], model.avgpool)
        linear = model.classifier[0]
        suffix = nn.Sequential(*model.classifier[1:])
    _check_channelwise(channelwise, layer)
    if isinstance(linear, nn.Conv2d) and linear.groups != 1:
        raise ValueError(f"the conv after {layer} is grouped; the lesion engine needs a full conv")
    return LayerSplit(model.features[: relu + 1], channelwise, linear, suffix)


def _check_channelwise(modules: nn.Sequential, layer: str) -> None:
    for module in modules:
        if not isinstance(module, CHANNELWISE_MODULES):
            raise ValueError(
                f"{type(module).__name__} after {layer}'s ReLU mixes or shifts channels; "
                "the lesion engine supports only pooling there"
            )
