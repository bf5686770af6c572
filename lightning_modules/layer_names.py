"""The names every analysis uses for VGG16's layers (conv1_1 ... conv5_3, fc6, fc7, output), defined once.

Kept free of torch so that command-line parsers can offer them as choices without loading it.
"""

CONV_LAYERS: tuple[str, ...] = (
    "conv1_1",
    "conv1_2",
    "conv2_1",
    "conv2_2",
    "conv3_1",
    "conv3_2",
    "conv3_3",
    "conv4_1",
    "conv4_2",
    "conv4_3",
    "conv5_1",
    "conv5_2",
    "conv5_3",
)
FC_LAYERS: tuple[str, ...] = ("fc6", "fc7", "output")
LAYER_NAMES: tuple[str, ...] = CONV_LAYERS + FC_LAYERS
