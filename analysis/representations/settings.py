"""The representation analyses' settings and their defaults, defined once (the commands and the study offer them as
they are here): activations, decoding, RSA, feature visualisation. Free of torch and Ray, so that command-line parsers
can read them cheaply."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from common.errors import SettingError
from common.ray_runner import Resources
from common.typed_config import check_at_least, check_choice
from lightning_modules.layer_names import (
    ALL_LAYERS,
    LAYER_KEYWORDS,
    LAYER_NAMES,
    PENULTIMATE,
    check_layers,
    check_unit_names,
)

POOLINGS = ("mean", "full")  # mean: each conv map averaged over space (C values); full: the whole map (C x H x W)
ACTIVATION_DTYPES = ("float32", "float16")
CLASSIFIERS = ("logistic", "svm")  # scikit-learn LogisticRegression (lbfgs, multinomial) or LinearSVC
DISTANCES = ("correlation", "euclidean", "cosine")  # correlation: 1 - Pearson r of two stimuli's activation patterns
COMPARISONS = ("spearman", "tau-a", "corr")  # rsatoolbox's names: Spearman rho, Kendall tau-a, Pearson r
# RSA's error bar across participants: a 95% percentile interval of the mean over participants resampled with
# replacement (the paper's), or mean +- SEM
ERROR_BARS = ("bootstrap", "sem")


def known_layers() -> tuple[str, ...]:
    """Every representation layer of any architecture of the registry, by name, and the keywords (each network's own
    are checked when it is loaded); loads torch, so asked only for names that are not VGG16's."""
    from lightning_modules.architectures import ARCHITECTURES
    from lightning_modules.units import representation_names

    names = dict.fromkeys(name for arch in ARCHITECTURES for name in representation_names(arch))
    return (*names, *LAYER_KEYWORDS)


@dataclass(frozen=True)
class ActivationSettings:
    """Which activations are extracted and how they are stored. `layers` are the network's representation layers
    (`lightning_modules.units.representation_layers`: its lesion units, e.g. VGG16's conv1_1 ... conv5_3 or a
    ResNet's layer4.1, and hidden fc layers after their ReLU, e.g. fc6/fc7; `output` is the logits), checked against
    each network when it is loaded; `pooling` applies to conv maps (fc layers are vectors either way). Keywords
    (`LAYER_KEYWORDS`: all, penultimate, last_unit) stand for layers of any architecture and are resolved for the
    networks analysed (`activations.for_networks`); the default is the penultimate layer (VGG16's fc7)."""

    layers: tuple[str, ...] = (PENULTIMATE,)
    pooling: str = "full"
    dtype: str = "float32"
    batch_size: int = 128
    resources: Resources = field(default_factory=Resources)  # per Ray task; not part of the results

    def __post_init__(self) -> None:
        cheap = (*LAYER_NAMES, *LAYER_KEYWORDS)  # checked without loading torch
        check_layers("layers", self.layers, cheap if set(self.layers) <= set(cheap) else known_layers())
        check_unit_names("layers", self.layers)
        check_choice("pooling", self.pooling, POOLINGS)
        check_choice("dtype", self.dtype, ACTIVATION_DTYPES)
        check_at_least("batch_size", self.batch_size, 1)

    def result_fields(self) -> dict:
        """The settings that change the stored activations (the identity of an extraction)."""
        return {
            "layers": list(self.layers),
            "pooling": self.pooling,
            "dtype": self.dtype,
            "batch_size": self.batch_size,
        }


@dataclass(frozen=True)
class DecodingSettings:
    """Linear decoding of held-out classes with stratified k-fold cross-validation over images (METHOD; classifier
    type and fold count unconfirmed). Features are standardised on each training fold."""

    classifier: str = "logistic"
    folds: int = 5
    regularisation: float = 1.0  # scikit-learn's C (inverse regularisation strength)
    max_iter: int = 1000
    seed: int = 0  # shuffles the folds
    tasks: tuple[str, ...] = ()  # the tasks whose held-out classes are decoded (default: every task that has them)
    extraction: ActivationSettings = field(default_factory=lambda: ActivationSettings(pooling="mean"))

    def __post_init__(self) -> None:
        check_choice("classifier", self.classifier, CLASSIFIERS)
        check_at_least("folds", self.folds, 2)
        if self.regularisation <= 0:
            raise SettingError("regularisation", f"must be positive, not {self.regularisation}")
        check_at_least("max_iter", self.max_iter, 1)

    def result_fields(self) -> dict:
        """The classifier's settings (the tasks and the extraction are recorded on their own)."""
        return {key: getattr(self, key) for key in ("classifier", "folds", "regularisation", "max_iter", "seed")}


@dataclass(frozen=True)
class RSASettings:
    """Layer RDMs over the stimuli and their comparison with each participant's behavioural RDM (METHOD)."""

    distance: str = "correlation"
    comparison: str = "spearman"
    error_bar: str = "bootstrap"  # ERROR_BARS
    n_bootstraps: int = 1000  # participant resamples of the bootstrap error bar
    seed: int = 0  # of those resamples
    extraction: ActivationSettings = field(default_factory=lambda: ActivationSettings(layers=(ALL_LAYERS,)))

    def __post_init__(self) -> None:
        check_choice("distance", self.distance, DISTANCES)
        check_choice("comparison", self.comparison, COMPARISONS)
        check_choice("error_bar", self.error_bar, ERROR_BARS)
        check_at_least("n_bootstraps", self.n_bootstraps, 1)

    def result_fields(self) -> dict:
        """The RDM, comparison and error-bar settings (the extraction is recorded on its own)."""
        return {key: getattr(self, key) for key in ("distance", "comparison", "error_bar", "n_bootstraps", "seed")}


@dataclass(frozen=True)
class VisualizeSettings:
    """Gradient ascent on the input (METHOD, from the authors' code: 500 steps, jitter up to 16 px, blur sigma 0.5
    every 10 steps, a small L2 penalty). Jitter and blur are in pixels at 224 px, scaled to the network's
    resolution (so a 32 px network sees the same relative regularisation); the optimiser (Adam), its step size,
    the L2 weight (on the mean squared normalised pixel) and the start (noise of standard deviation `init_std`)
    are unconfirmed."""

    steps: int = 500
    learning_rate: float = 0.05
    jitter: int = 16
    blur_sigma: float = 0.5
    blur_every: int = 10
    l2: float = 0.01
    init_std: float = 0.1
    natural_images: int = 6  # test images that drive each filter most, shown beside its optimised image
    seed: int = 0
    device: str = "auto"  # auto, cpu or cuda[:i] for the gradient ascent: a GPU when there is one
    resources: Resources = field(default_factory=Resources)  # of the natural images' Ray task; not in the results

    def __post_init__(self) -> None:
        for key in ("steps", "blur_every"):
            check_at_least(key, getattr(self, key), 1)
        for key in ("jitter", "blur_sigma", "l2", "init_std", "natural_images"):
            check_at_least(key, getattr(self, key), 0)
        if self.learning_rate <= 0:
            raise SettingError("learning_rate", f"must be positive, not {self.learning_rate}")

    def result_fields(self) -> dict:
        """What the images and tables depend on: every setting but where it runs."""
        return {key: value for key, value in asdict(self).items() if key not in ("device", "resources")}

    def jitter_pixels(self, resolution: int) -> int:
        """The jitter at `resolution`: `jitter` pixels at 224 px, scaled."""
        return int(round(self.jitter * resolution / 224))

    def blur_pixels(self, resolution: int) -> float:
        """The blur's standard deviation at `resolution`: `blur_sigma` pixels at 224 px, scaled."""
        return self.blur_sigma * resolution / 224
