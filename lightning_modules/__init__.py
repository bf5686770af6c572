"""Models and training: VGG16 networks trained on one or more tasks with Lightning."""

from lightning_modules.checkpoint import LoadedModel, load_model
from lightning_modules.vgg import CONV_LAYERS, FC_LAYERS, LAYER_NAMES, VGG, conv_indices, filters_per_layer, relu_indices, vgg16

__all__ = [
    "CONV_LAYERS", "FC_LAYERS", "LAYER_NAMES", "VGG", "LoadedModel", "conv_indices", "filters_per_layer",
    "load_model", "relu_indices", "vgg16",
]
