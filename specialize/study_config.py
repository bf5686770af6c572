"""The study config (`studies/<name>.yaml`): networks x seeds, the data it may build itself, the analyses each trial
runs, trial resources, W&B.

A study trains every network (task pairs and single-task controls, each a training config with overrides) for
every seed, as one Ray Tune trial per (network, seed); pair trials then run the lesion sweep, the segregation
analysis and its random-task control on the chosen checkpoint, and trials can decode held-out classes, run RSA
against behaviour and visualise the top filters (`specialize.pipeline` runs each stage). Each analysis' section is
its command's own settings type (`SweepSettings`, `SegregationSettings`, `DecodingSettings`, `RSASettings`,
`VisualizeSettings`, with their resources per Ray task) plus when it runs, so every setting of a single command
can be set here and each default is said once, in the settings type. A study can also draw and build its own
synthetic data (`data.synth`, `data.build`: `specialize data synth` and `data build`'s settings) and synthetic
participants for RSA (`data.behaviour`). Loaded strictly like training configs: unknown keys and wrong types are
one-line errors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.inference import AggregateSettings
from analysis.representations.settings import DecodingSettings, RSASettings, VisualizeSettings
from analysis.segregation.settings import SegregationSettings
from common.errors import SettingError, UserError
from common.layout import CHECKPOINTS, DATA_DIR
from common.ray_runner import Resources
from common.typed_config import apply_override, build_dataclass, check_at_least, check_choice, read_yaml
from common.wandb_runs import WANDB_MODES, WANDB_PROJECT, WandbTarget
from data_pipeline.build import BuildSettings
from data_pipeline.synth import SynthSettings
from data_pipeline.synth_behaviour import BehaviourSettings
from lightning_modules.layer_names import LAST_UNIT, check_unit_names
from sweeps.settings import SweepSettings

if TYPE_CHECKING:
    from lightning_modules.config import TrainConfig


@dataclass(frozen=True)
class NetworkSpec:
    """One network of the study: a training config, overrides applied to it, and optionally its data directory."""

    config: str = ""
    overrides: tuple[str, ...] = ()
    data: str | None = None  # default: the study's synthetic data, or the config's data.dir


@dataclass(frozen=True)
class SyntheticBehaviour(BehaviourSettings):
    """Synthetic participants who judge the first `images_per_class` held-out images of each held-out class of
    `task` (`specialize data behaviour`'s settings): the stimuli of RSA when its own are not given."""

    task: str = "face"
    images_per_class: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_at_least("images_per_class", self.images_per_class, 2)


@dataclass(frozen=True)
class StudyData:
    """Synthetic data the study draws and builds itself (OUT/images, OUT/data), for every network without data of
    its own; and synthetic participants for RSA (OUT/stimuli.txt, OUT/behaviour). None: the networks' data."""

    synth: SynthSettings | None = None
    build: BuildSettings = field(default_factory=BuildSettings)
    behaviour: SyntheticBehaviour | None = None


@dataclass(frozen=True)
class LesionStage(SweepSettings):
    """The lesion sweep of each pair trial: `specialize lesion`'s settings."""

    enabled: bool = True


@dataclass(frozen=True)
class SegregationStage(SegregationSettings):
    """The segregation analysis of each pair trial (`specialize segregation`'s settings), and its random-task control
    (the same settings with `--random-tasks`) beside it."""

    enabled: bool = True
    control: bool = True  # also run the random-task control

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.random_tasks:
            raise SettingError(
                "random_tasks", "is set by the study for the control (segregation_random/); set `control` instead"
            )


@dataclass(frozen=True)
class NetworkChoice:
    """Whether an analysis runs, and on which networks (default: all it applies to)."""

    enabled: bool = False
    networks: tuple[str, ...] = ()

    def runs_on(self, network: str) -> bool:
        """Whether the trials of `network` run this analysis."""
        return self.enabled and (not self.networks or network in self.networks)


@dataclass(frozen=True)
class DecodingStage(DecodingSettings, NetworkChoice):
    """Decoding of the held-out classes from each trial's network (`specialize decode`'s settings; the data must be
    built with held-out classes)."""


@dataclass(frozen=True)
class RSAStage(RSASettings, NetworkChoice):
    """RSA of each trial's network against behavioural RDMs (`specialize rsa`'s settings)."""

    stimuli: str = ""  # the stimulus list (default: the study's synthetic participants' stimuli)
    behaviour: str = ""  # the behaviour directory (default: the study's synthetic participants)


@dataclass(frozen=True)
class VisualizeStage(VisualizeSettings, NetworkChoice):
    """Feature visualisation of each task's top-ranked filters of one layer, for pair trials (`specialize
    visualize --top N --task ... --sweep`'s settings): `layer` is a lesion unit of each network visualised (its
    last by default: VGG16's conv5_3), checked against each network's architecture when the study is loaded."""

    layer: str = LAST_UNIT
    top: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_unit_names("layer", [self.layer])
        check_at_least("top", self.top, 1)


@dataclass(frozen=True)
class Analyses:
    """The analyses after training: the lesion stages for pairs, representations for the networks chosen."""

    checkpoint: str = "best"  # the checkpoint analysed: best (lowest validation loss) or last
    lesion: LesionStage = field(default_factory=LesionStage)
    segregation: SegregationStage = field(default_factory=SegregationStage)
    decoding: DecodingStage = field(default_factory=DecodingStage)
    rsa: RSAStage = field(default_factory=RSAStage)
    visualize: VisualizeStage = field(default_factory=VisualizeStage)

    def __post_init__(self) -> None:
        check_choice("checkpoint", self.checkpoint, CHECKPOINTS)

    def ray_stages(self, network: str, pair: bool) -> list[Resources]:
        """The resources of each Ray stage a trial of `network` runs."""
        stages = []
        if pair and self.lesion.enabled:
            stages.append(self.lesion.resources)
            if self.segregation.enabled:
                stages.append(self.segregation.resources)
            if self.visualize.runs_on(network):
                stages.append(self.visualize.resources)
        if self.decoding.runs_on(network):
            stages.append(self.decoding.extraction.resources)
        if self.rsa.runs_on(network):
            stages.append(self.rsa.extraction.resources)
        return stages


@dataclass(frozen=True)
class StudyResources:
    """Each trial trains on `train` (its CPUs are torch's threads, at most one GPU; `max_retries`: retries of a trial
    whose worker died) and reserves `tasks_per_trial` slots for the Ray tasks of its analyses (a Ray placement
    group; each slot as large as the largest of those tasks), so trials never wait on each other's tasks."""

    train: Resources = field(default_factory=Resources)
    tasks_per_trial: int = 1

    def __post_init__(self) -> None:
        check_at_least("tasks_per_trial", self.tasks_per_trial, 1)
        if self.train.gpus > 1:
            raise SettingError(
                "train.gpus",
                f"is {self.train.gpus}: a study trial trains on at most one GPU; train multi-GPU networks with "
                "`cluster/launch.sh ... specialize train` (Lightning DDP) and analyse their checkpoints with "
                "`specialize lesion` and `segregation`",
            )


@dataclass(frozen=True)
class StudyWandb:
    """W&B for every run of the study: one group (default: the study's name), offline unless `mode: online`."""

    project: str = WANDB_PROJECT
    mode: str = WANDB_MODES[0]
    group: str | None = None

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, WANDB_MODES)


@dataclass(frozen=True)
class StudyConfig:
    """A whole study."""

    name: str = "study"
    seeds: tuple[int, ...] = (0,)
    pairs: dict[str, NetworkSpec] = field(default_factory=dict)
    controls: dict[str, NetworkSpec] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()  # applied to every network's training config
    data: StudyData = field(default_factory=StudyData)
    analyses: Analyses = field(default_factory=Analyses)
    resources: StudyResources = field(default_factory=StudyResources)
    wandb: StudyWandb = field(default_factory=StudyWandb)
    aggregate: AggregateSettings = field(default_factory=AggregateSettings)  # across seeds (`analysis.seeds`)
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

    def wandb_target(self, name: str, **labels: Any) -> WandbTarget:
        """Where a stage of the study logs: the study's W&B project, mode and group, run `name`, labelled with the
        study and `labels`."""
        return WandbTarget(self.wandb.project, self.wandb.mode, self.wandb_group, name, {**labels, "study": self.name})

    @property
    def data_dir(self) -> Path | None:
        """The data directory the study builds itself, or None when its networks bring their own."""
        return self.out_dir / DATA_DIR if self.data.synth is not None else None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON friendly)."""
        return dataclasses.asdict(self)


def load_study(path: str | Path, overrides: list[str] | tuple[str, ...] = (), root: Path | None = None) -> StudyConfig:
    """Load a study YAML, apply `key=value` overrides (e.g. `seeds=[3]`), validate it, and make its paths (training
    configs, data, output) absolute against `root` (default: the working directory), since trials run in
    directories of their own."""
    data = read_yaml(path)
    for override in overrides:
        apply_override(data, override)
    return with_absolute_paths(study_from_dict(data, root), root)


def network_config(study: StudyConfig, network: str) -> TrainConfig:
    """A network's training config as the study trains it: its config file with the study's W&B project and mode and
    the study's data directory (when it builds its own), then the study's and the network's overrides (which may
    change those), then the study's W&B group and the network's own data directory; the data directory absolute."""
    from lightning_modules.config import load_config

    spec = study.networks[network]
    config = load_config(
        spec.config,
        [
            f"wandb.project={study.wandb.project}",
            f"wandb.mode={study.wandb.mode}",
            *([f"data.dir={study.data_dir}"] if study.data_dir is not None else []),
            *study.overrides,
            *spec.overrides,
            f"wandb.group={study.wandb_group}",
            *([f"data.dir={spec.data}"] if spec.data else []),
        ],
    )
    return dataclasses.replace(config, data=dataclasses.replace(config.data, dir=str(Path(config.data.dir).resolve())))


def with_absolute_paths(study: StudyConfig, root: Path | None = None) -> StudyConfig:
    """The study with its training configs, data directories, RSA inputs and output resolved against `root`
    (default: the working directory)."""

    def absolute(path: str) -> str:
        return str(((root or Path.cwd()) / path).resolve())

    def resolved(spec: NetworkSpec) -> NetworkSpec:
        return dataclasses.replace(spec, config=absolute(spec.config), data=absolute(spec.data) if spec.data else None)

    rsa = study.analyses.rsa
    rsa = dataclasses.replace(
        rsa, **{key: absolute(getattr(rsa, key)) for key in ("stimuli", "behaviour") if getattr(rsa, key)}
    )
    return dataclasses.replace(
        study,
        output=absolute(study.output),
        pairs={name: resolved(spec) for name, spec in study.pairs.items()},
        controls={name: resolved(spec) for name, spec in study.controls.items()},
        analyses=dataclasses.replace(study.analyses, rsa=rsa),
    )


def study_from_dict(data: Mapping[str, Any], root: Path | None = None) -> StudyConfig:
    """Build and validate a StudyConfig from a nested mapping (its relative paths against `root`, default: the
    working directory); UserError names any unknown key or bad value."""
    study = build_dataclass(StudyConfig, data)
    validate(study, root or Path.cwd())
    return study


def validate(study: StudyConfig, root: Path) -> None:
    """Check what no section can check alone: networks, seeds, that every training config exists, and that each
    analysis has what it needs."""
    if not study.pairs and not study.controls:
        raise UserError(
            "the study has no networks; list task pairs under `pairs` and/or single-task networks under "
            "`controls`, each with its training `config`"
        )
    if not study.seeds or len(set(study.seeds)) != len(study.seeds):
        raise UserError(f"config key seeds must list distinct seeds, e.g. [0, 1, 2], not {list(study.seeds)}")
    shared = set(study.pairs) & set(study.controls)
    if shared:
        raise UserError(f"network {sorted(shared)[0]!r} is both a pair and a control; give each network one name")
    for name, spec in study.networks.items():
        if not spec.config:
            raise UserError(f"network {name!r} has no training config; set {name}.config: configs/<name>.yaml")
        if not (root / spec.config).is_file():
            raise UserError(f"network {name!r}: training config {spec.config} does not exist; fix the path")
    analyses = study.analyses
    for name in ("segregation", "visualize"):
        if getattr(analyses, name).enabled and not analyses.lesion.enabled:
            raise UserError(f"analyses.{name} needs analyses.lesion (it reads the sweep's ranking); enable both")
    lesion, segregation = analyses.lesion, analyses.segregation
    if segregation.enabled and lesion.ranking == "greedy" and max(segregation.all_fractions) > lesion.greedy_target:
        raise UserError(
            f"analyses.segregation lesions up to fraction {max(segregation.all_fractions)} but the greedy ranking "
            f"chooses {lesion.greedy_target} of each layer; set analyses.lesion.greedy_target: "
            f"{max(segregation.all_fractions)}"
        )
    for name in ("decoding", "rsa", "visualize"):
        strangers = [network for network in getattr(analyses, name).networks if network not in study.networks]
        if strangers:
            raise UserError(
                f"analyses.{name}.networks: {strangers[0]!r} is not a network of the study; choose from "
                f"{', '.join(study.networks)}"
            )
    if analyses.rsa.enabled and study.data.behaviour is None:
        rsa = analyses.rsa
        if not rsa.stimuli or not (root / rsa.stimuli).is_file():
            raise UserError(
                f"analyses.rsa.stimuli: stimulus list {rsa.stimuli!r} is not a file; give the list of "
                "stimulus images (one path per line), or let the study draw participants (data.behaviour)"
            )
        if not rsa.behaviour or not (root / rsa.behaviour).is_dir():
            raise UserError(
                f"analyses.rsa.behaviour: {rsa.behaviour!r} is not a folder; give a behaviour directory "
                "(README, Behavioural data)"
            )
    if study.data.behaviour is not None and study.data.synth is None:
        raise UserError("data.behaviour draws participants for the study's synthetic images; set data.synth too")
    check_network_layers(with_absolute_paths(study, root))


def check_network_layers(study: StudyConfig) -> None:
    """UserError, before anything runs, when an analysis names a layer that a network it runs on lacks in its
    architecture (`model.arch`): the lesion sweep's and the visualisation's units (of pairs), decoding's and RSA's
    representation layers (keywords among them, all, penultimate and last_unit, resolved for each architecture)."""
    from lightning_modules.units import representation_names, resolve_layers, unit_names

    analyses = study.analyses
    for network in study.networks:
        arch = network_config(study, network).model.arch
        units, representations = unit_names(arch), representation_names(arch)
        lesioned = network in study.pairs and analyses.lesion.enabled
        visualized = lesioned and analyses.visualize.runs_on(network)
        asked = {  # the lesion sweep takes unit names alone; the others, keywords too
            "lesion.layers": (analyses.lesion.layers if lesioned else (), units),
            "visualize.layer": (resolve_layers(arch, [analyses.visualize.layer]) if visualized else (), units),
            **{
                f"{name}.extraction.layers": (
                    resolve_layers(arch, stage.extraction.layers) if stage.runs_on(network) else (),
                    representations,
                )
                for name, stage in (("decoding", analyses.decoding), ("rsa", analyses.rsa))
            },
        }
        for key, (layers, valid) in asked.items():
            missing = [layer for layer in layers if layer not in valid]
            if missing:
                raise UserError(
                    f"config key analyses.{key}: network {network} ({arch}) has no layer {missing[0]!r}; choose "
                    f"from {', '.join(valid)}"
                )
