"""The names every analysis uses for VGG16's layers (conv1_1 ... conv5_3, fc6, fc7, output), defined once.

Kept free of torch so that command-line parsers can offer them as choices without loading it; `check_layers` is the
one check of a list of them. Other architectures' lesion units are found from their module graph
(`lightning_modules.units`) and checked against the network once it is loaded; `check_unit_names` is what can be
checked before. Keywords (`LAYER_KEYWORDS`) name layers of any architecture by their place, so that defaults and
study configs hold for every network; `lightning_modules.units.resolve_layers` gives the names they stand for.
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

ALL_LAYERS = "all"
PENULTIMATE = "penultimate"
LAST_UNIT = "last_unit"
LAYER_KEYWORDS: dict[str, str] = {
    ALL_LAYERS: "every representation layer of the network, in forward order",
    PENULTIMATE: "its last layer before the output (VGG16's fc7, AlexNet's classifier.4, ResNet-18's layer4.1)",
    LAST_UNIT: "its last lesion unit (VGG16's conv5_3, AlexNet's features.10, ResNet-18's layer4.1)",
}


def check_layers(key: str, layers: tuple[str, ...] | list[str], valid: tuple[str, ...] = LAYER_NAMES) -> None:
    """The one check of a layer list: SettingError for an empty list or a name not among `valid`."""
    from common.errors import SettingError

    unknown = [layer for layer in layers if layer not in valid]
    if unknown:
        raise SettingError(key, f"has unknown layer {unknown[0]!r}; choose from {', '.join(valid)}")
    if not layers:
        raise SettingError(key, f"is empty; name at least one of {', '.join(valid)}")


def check_unit_names(key: str, layers: tuple[str, ...] | list[str]) -> None:
    """What can be checked of unit names before the network is known: SettingError for a name that is not a
    non-empty string or that repeats."""
    from common.errors import SettingError

    bad = [layer for layer in layers if not isinstance(layer, str) or not layer]
    if bad:
        raise SettingError(key, f"has a bad unit name {bad[0]!r}; name units as the network's (e.g. conv3_1, layer3.1)")
    repeated = sorted({layer for layer in layers if list(layers).count(layer) > 1})
    if repeated:
        raise SettingError(key, f"names {repeated[0]!r} twice; name each unit once")
