"""The names every analysis uses for VGG16's layers (conv1_1 ... conv5_3, fc6, fc7, output), defined once.

Kept free of torch so that command-line parsers can offer them as choices without loading it; `check_layers` is the
one check of a list of them.
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


def check_layers(key: str, layers: tuple[str, ...] | list[str], valid: tuple[str, ...] = LAYER_NAMES) -> None:
    """The one check of a layer list: SettingError for an empty list or a name not among `valid`."""
    from common.errors import SettingError

    unknown = [layer for layer in layers if layer not in valid]
    if unknown:
        raise SettingError(key, f"has unknown layer {unknown[0]!r}; choose from {', '.join(valid)}")
    if not layers:
        raise SettingError(key, f"is empty; name at least one of {', '.join(valid)}")
