"""The representation analyses' settings and their defaults, defined once (the commands and the study offer them as
they are here): activations, decoding, RSA, feature visualisation. Free of torch and Ray, so that command-line parsers
can read them cheaply."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import UserError
from common.ray_runner import Resources
from lightning_modules.layer_names import LAYER_NAMES

POOLINGS = ("mean", "full")  # mean: each conv map averaged over space (C values); full: the whole map (C x H x W)
ACTIVATION_DTYPES = ("float32", "float16")
CLASSIFIERS = ("logistic", "svm")  # scikit-learn LogisticRegression (lbfgs, multinomial) or LinearSVC
DISTANCES = ("correlation", "euclidean", "cosine")  # correlation: 1 - Pearson r of two stimuli's activation patterns
COMPARISONS = ("spearman", "tau-a", "corr")  # rsatoolbox's names: Spearman rho, Kendall tau-a, Pearson r


def check_layers(layers: tuple[str, ...]) -> None:
    """UserError for an empty list or a name that is not a VGG16 layer."""
    unknown = [layer for layer in layers if layer not in LAYER_NAMES]
    if unknown or not layers:
        raise UserError(
            f"unknown layer {unknown[0]!r}; choose from {', '.join(LAYER_NAMES)}"
            if unknown
            else "no layers given; name at least one of " + ", ".join(LAYER_NAMES)
        )


def _check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{option} must be one of {', '.join(choices)}, not {value!r}")


@dataclass(frozen=True)
class ActivationSettings:
    """Which activations are extracted and how they are stored. Conv layers and fc6/fc7 are taken after their
    ReLU, `output` is the logits; `pooling` applies to conv layers (fc layers are vectors either way)."""

    layers: tuple[str, ...] = ("fc7",)
    pooling: str = "full"
    dtype: str = "float32"
    batch_size: int = 128
    resources: Resources = field(default_factory=Resources)  # per Ray task; not part of the results

    def __post_init__(self) -> None:
        check_layers(self.layers)
        _check_choice("--pooling", self.pooling, POOLINGS)
        _check_choice("--dtype", self.dtype, ACTIVATION_DTYPES)
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, not {self.batch_size}")

    def result_fields(self) -> dict:
        """The settings that change the stored activations (the identity of an extraction)."""
        return {"layers": list(self.layers), "pooling": self.pooling, "dtype": self.dtype}


@dataclass(frozen=True)
class DecodingSettings:
    """Linear decoding of held-out classes with stratified k-fold cross-validation over images (METHOD; classifier
    type and fold count unconfirmed). Features are standardised on each training fold."""

    classifier: str = "logistic"
    folds: int = 5
    regularisation: float = 1.0  # scikit-learn's C (inverse regularisation strength)
    max_iter: int = 1000
    seed: int = 0  # shuffles the folds

    def __post_init__(self) -> None:
        _check_choice("--classifier", self.classifier, CLASSIFIERS)
        if self.folds < 2:
            raise UserError(f"--folds must be at least 2, not {self.folds}")
        if self.regularisation <= 0 or self.max_iter < 1:
            raise UserError(
                f"--C must be positive and --max-iter at least 1 (got {self.regularisation}, {self.max_iter})"
            )


@dataclass(frozen=True)
class RSASettings:
    """Layer RDMs over the stimuli and their comparison with each participant's behavioural RDM (METHOD)."""

    distance: str = "correlation"
    comparison: str = "spearman"

    def __post_init__(self) -> None:
        _check_choice("--distance", self.distance, DISTANCES)
        _check_choice("--comparison", self.comparison, COMPARISONS)


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

    def __post_init__(self) -> None:
        if self.steps < 1 or self.learning_rate <= 0 or self.jitter < 0 or self.blur_sigma < 0 or self.blur_every < 1:
            raise UserError("--steps, --lr and --blur-every must be positive, --jitter and --blur-sigma not negative")
        if self.l2 < 0 or self.init_std < 0 or self.natural_images < 0:
            raise UserError("--l2, the start noise and --natural-images must not be negative")

    def jitter_pixels(self, resolution: int) -> int:
        """The jitter at `resolution`: `jitter` pixels at 224 px, scaled."""
        return int(round(self.jitter * resolution / 224))

    def blur_pixels(self, resolution: int) -> float:
        """The blur's standard deviation at `resolution`: `blur_sigma` pixels at 224 px, scaled."""
        return self.blur_sigma * resolution / 224
