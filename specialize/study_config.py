"""The study config (`studies/<name>.yaml`): networks x seeds, the analyses each trial runs, resources per stage, W&B.

A study trains every network (task pairs and single-task controls, each a training config with overrides) for
every seed, as one Ray Tune trial per (network, seed); pair trials then run the lesion sweep, the segregation
analysis and its random-task control on the chosen checkpoint, and every trial can decode held-out classes and run
RSA against behaviour. Loaded strictly like training configs: unknown keys and wrong types are one-line errors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.bootstrap import DEFAULT_RESAMPLES
from analysis.representations.settings import CLASSIFIERS, COMPARISONS, DISTANCES, DecodingSettings, RSASettings
from analysis.segregation.settings import DEFAULT_BATCH_SIZE
from common.errors import UserError
from common.ray_runner import Resources
from common.typed_config import apply_override, build_dataclass, check_choice, read_yaml
from common.wandb_runs import WANDB_MODES
from lightning_modules.layer_names import CONV_LAYERS, LAYER_NAMES
from sweeps.settings import DEFAULT_FILTERS_PER_TASK, DEFAULT_IMAGES_PER_TASK, RANKINGS

CHECKPOINTS = ("best", "last")


@dataclass
class NetworkSpec:
    """One network of the study: a training config, overrides applied to it, and optionally its data directory."""

    config: str = ""
    overrides: list[str] = field(default_factory=list)
    data: str | None = None  # default: the config's data.dir


@dataclass
class LesionStage:
    """The lesion sweep of each pair trial (`specialize lesion`)."""

    enabled: bool = True
    checkpoint: str = "best"  # which checkpoint the analyses use: best (lowest validation loss) or last
    ranking: str = "oneshot"
    images_per_task: int = DEFAULT_IMAGES_PER_TASK
    seed: int = 0
    layers: list[str] = field(default_factory=lambda: list(CONV_LAYERS))
    filters_per_task: int = DEFAULT_FILTERS_PER_TASK


@dataclass
class SegregationStage:
    """The segregation analysis of each pair trial (`specialize segregation`), and its random-task control."""

    enabled: bool = True
    fraction: float = 0.2
    fractions: list[float] = field(default_factory=list)
    bootstraps: int = DEFAULT_RESAMPLES
    seed: int = 0
    random_tasks: bool = True  # also run the random-task control (`--random-tasks`)
    batch_size: int = DEFAULT_BATCH_SIZE


@dataclass
class DecodingStage:
    """Decoding of the held-out classes from every trial's network (`specialize decode`; the data must be built with
    `--heldout-classes`)."""

    enabled: bool = False
    networks: list[str] = field(default_factory=list)  # the networks whose trials decode (default: all)
    layers: list[str] = field(default_factory=lambda: ["fc7"])
    classifier: str = "logistic"
    folds: int = 5

    def runs_on(self, network: str) -> bool:
        """Whether the trials of `network` decode."""
        return self.enabled and (not self.networks or network in self.networks)

    def settings(self) -> DecodingSettings:
        """The decoding settings (validated)."""
        return DecodingSettings(classifier=self.classifier, folds=self.folds)


@dataclass
class RSAStage:
    """RSA of every trial's network against behavioural RDMs (`specialize rsa`)."""

    enabled: bool = False
    networks: list[str] = field(default_factory=list)  # the networks whose trials run RSA (default: all)
    stimuli: str = ""  # the stimulus list
    behaviour: str = ""  # the behaviour directory
    layers: list[str] = field(default_factory=lambda: list(LAYER_NAMES))
    distance: str = "correlation"
    comparison: str = "spearman"

    def settings(self) -> RSASettings:
        """The RSA settings (validated)."""
        return RSASettings(distance=self.distance, comparison=self.comparison)

    def runs_on(self, network: str) -> bool:
        """Whether the trials of `network` run RSA."""
        return self.enabled and (not self.networks or network in self.networks)


@dataclass
class Analyses:
    """Which analyses each trial runs after training: the lesion stages for pairs, representations for every network."""

    lesion: LesionStage = field(default_factory=LesionStage)
    segregation: SegregationStage = field(default_factory=SegregationStage)
    decoding: DecodingStage = field(default_factory=DecodingStage)
    rsa: RSAStage = field(default_factory=RSAStage)

    def representations(self, network: str) -> bool:
        """Whether the trials of `network` decode or run RSA."""
        return self.decoding.runs_on(network) or self.rsa.runs_on(network)


@dataclass
class StageResources:
    """CPUs (also torch threads) and GPUs of one Ray task or trial."""

    cpus: float = 1.0
    gpus: float = 0.0


@dataclass
class StudyResources:
    """Resources per stage. Each trial reserves its training resources plus `tasks_per_trial` slots for the sweep and
    evaluation tasks it submits (a Ray placement group), so trials never wait on each other's tasks."""

    train: StageResources = field(default_factory=StageResources)
    sweep_task: StageResources = field(default_factory=StageResources)
    eval_task: StageResources = field(default_factory=StageResources)
    tasks_per_trial: int = 1
    max_failures: int = 2  # retries of a trial whose worker died
    max_retries: int = 3  # retries of a sweep or evaluation task whose worker died


@dataclass
class StudyWandb:
    """W&B for every run of the study: one group (default: the study's name), offline unless `mode: online`."""

    project: str = "specialize"
    mode: str = "offline"
    group: str | None = None


@dataclass
class StudyConfig:
    """A whole study."""

    name: str = "study"
    seeds: list[int] = field(default_factory=lambda: [0])
    pairs: dict[str, NetworkSpec] = field(default_factory=dict)
    controls: dict[str, NetworkSpec] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)  # applied to every network's training config
    analyses: Analyses = field(default_factory=Analyses)
    resources: StudyResources = field(default_factory=StudyResources)
    wandb: StudyWandb = field(default_factory=StudyWandb)
    output: str = "runs/studies"  # the study lives in output/name

    @property
    def out_dir(self) -> Path:
        """The study's directory."""
        return Path(self.output) / self.name

    @property
    def networks(self) -> dict[str, NetworkSpec]:
        """Pairs, then controls."""
        return {**self.pairs, **self.controls}

    @property
    def wandb_group(self) -> str:
        """The W&B group of every run of the study."""
        return self.wandb.group or self.name

    def task_resources(self, stage: StageResources) -> Resources:
        """The Ray task resources of a sweep or evaluation task."""
        return Resources(cpus=stage.cpus, gpus=stage.gpus, max_retries=self.resources.max_retries)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON friendly)."""
        return dataclasses.asdict(self)


def load_study(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> StudyConfig:
    """Load a study YAML, apply `key=value` overrides (e.g. `seeds=[3]`), validate it, and make its paths (training
    configs, data, output) absolute, since trials run in directories of their own."""
    data = read_yaml(path)
    for override in overrides:
        apply_override(data, override)
    return with_absolute_paths(study_from_dict(data))


def with_absolute_paths(study: StudyConfig) -> StudyConfig:
    """The study with its training configs, data directories and output resolved against the working directory."""

    def resolved(spec: NetworkSpec) -> NetworkSpec:
        return dataclasses.replace(
            spec, config=str(Path(spec.config).resolve()), data=str(Path(spec.data).resolve()) if spec.data else None
        )

    rsa = study.analyses.rsa
    rsa = dataclasses.replace(
        rsa, **{key: str(Path(getattr(rsa, key)).resolve()) for key in ("stimuli", "behaviour") if getattr(rsa, key)}
    )
    return dataclasses.replace(
        study,
        output=str(Path(study.output).resolve()),
        pairs={name: resolved(spec) for name, spec in study.pairs.items()},
        controls={name: resolved(spec) for name, spec in study.controls.items()},
        analyses=dataclasses.replace(study.analyses, rsa=rsa),
    )


def study_from_dict(data: Mapping[str, Any]) -> StudyConfig:
    """Build and validate a StudyConfig from a nested mapping; UserError names any unknown key or bad value."""
    study = build_dataclass(StudyConfig, data)
    validate(study)
    return study


def validate(study: StudyConfig) -> None:
    """Check what types alone cannot: names, seeds, choices, counts and that every training config exists."""
    if not study.pairs and not study.controls:
        raise UserError(
            "the study has no networks; list task pairs under `pairs` and/or single-task networks under "
            "`controls`, each with its training `config`"
        )
    if not study.seeds or len(set(study.seeds)) != len(study.seeds):
        raise UserError(f"config key seeds must list distinct seeds, e.g. [0, 1, 2], not {study.seeds}")
    shared = set(study.pairs) & set(study.controls)
    if shared:
        raise UserError(f"network {sorted(shared)[0]!r} is both a pair and a control; give each network one name")
    for name, spec in study.networks.items():
        if not spec.config:
            raise UserError(f"network {name!r} has no training config; set {name}.config: configs/<name>.yaml")
        if not Path(spec.config).is_file():
            raise UserError(f"network {name!r}: training config {spec.config} does not exist; fix the path")
    check_choice("analyses.lesion.ranking", study.analyses.lesion.ranking, RANKINGS)
    check_choice("analyses.lesion.checkpoint", study.analyses.lesion.checkpoint, CHECKPOINTS)
    check_choice("wandb.mode", study.wandb.mode, WANDB_MODES)
    unknown = [layer for layer in study.analyses.lesion.layers if layer not in CONV_LAYERS]
    if unknown or not study.analyses.lesion.layers:
        raise UserError(
            f"analyses.lesion.layers: unknown or no layers ({unknown}); choose from {', '.join(CONV_LAYERS)}"
        )
    if study.resources.train.gpus > 1:
        raise UserError(
            f"resources.train.gpus={study.resources.train.gpus}: a study trial trains on at most one GPU; "
            "train multi-GPU networks with `cluster/launch.sh ... specialize train` (Lightning DDP) and "
            "analyse their checkpoints with `specialize lesion` and `segregation`"
        )
    if study.resources.tasks_per_trial < 1:
        raise UserError("resources.tasks_per_trial must be at least 1")
    if study.analyses.segregation.enabled and not study.analyses.lesion.enabled:
        raise UserError("analyses.segregation needs analyses.lesion (it lesions the sweep's top filters); enable both")
    validate_representations(study.analyses, list(study.networks))


def validate_representations(analyses: Analyses, networks: list[str]) -> None:
    """Check the decoding and RSA stages: networks, layers, settings, and the behavioural inputs RSA reads."""
    for name, stage in (("decoding", analyses.decoding), ("rsa", analyses.rsa)):
        strangers = [network for network in stage.networks if network not in networks]
        if strangers:
            raise UserError(
                f"analyses.{name}.networks: {strangers[0]!r} is not a network of the study; choose from "
                f"{', '.join(networks)}"
            )
        unknown = [layer for layer in stage.layers if layer not in LAYER_NAMES]
        if unknown or not stage.layers:
            raise UserError(
                f"analyses.{name}.layers: unknown or no layers ({unknown}); choose from {', '.join(LAYER_NAMES)}"
            )
    decoding, rsa = analyses.decoding, analyses.rsa
    check_choice("analyses.decoding.classifier", decoding.classifier, CLASSIFIERS)
    if decoding.folds < 2:
        raise UserError(f"config key analyses.decoding.folds must be at least 2, not {decoding.folds}")
    check_choice("analyses.rsa.distance", rsa.distance, DISTANCES)
    check_choice("analyses.rsa.comparison", rsa.comparison, COMPARISONS)
    if rsa.enabled:
        if not rsa.stimuli or not Path(rsa.stimuli).is_file():
            raise UserError(
                f"analyses.rsa.stimuli: stimulus list {rsa.stimuli!r} is not a file; give the list of "
                "stimulus images (one path per line)"
            )
        if not rsa.behaviour or not Path(rsa.behaviour).is_dir():
            raise UserError(
                f"analyses.rsa.behaviour: {rsa.behaviour!r} is not a folder; give a behaviour directory "
                "(README, Behavioural data)"
            )
