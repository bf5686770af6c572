"""The training config: dataclasses loaded from YAML, `section.key=value` overrides, strict about unknown keys.

Defaults follow METHOD (SGD lr 0.001, momentum 0.9, weight decay 1e-4, global batch 128, learning rate x0.1
after 5 epochs without a lower validation loss, about 50 epochs). `data.batch_size` is the global batch:
each of the `trainer.devices * trainer.num_nodes` processes loads `batch_size / world_size` images per step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common.errors import SettingError, UserError
from common.io import atomic_path, read_json
from common.layout import CONFIG_FILE, IDENTITY_KEY
from common.redact import redact
from common.typed_config import apply_override, build_dataclass, check_choice, read_yaml
from common.wandb_runs import WANDB_MODES, WANDB_PROJECT
from lightning_modules.architectures import DEFAULT_ARCH, check_model

HEADS = ("shared", "separate")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true")


@dataclass
class DataConfig:
    """Where the FFCV data lives and how it is loaded."""

    dir: str = "data/synth"
    resolution: int = 224
    batch_size: int = 128
    num_workers: int = 8
    augment: bool = True  # false: train on the eval transform in file order (deterministic; for checks)
    os_cache: bool = True
    classes: dict[str, int] = field(default_factory=dict)  # expected classes per task; checked against the data


@dataclass
class ModelConfig:
    """The network (`lightning_modules.architectures`) and its output layer."""

    arch: str = DEFAULT_ARCH  # vgg16, vgg11, vgg13, vgg19, alexnet, resnet18, resnet50
    width: float = 1.0
    batch_norm: bool = False  # the VGGs' batch-norm variant; ResNets always have batch norm, AlexNet never
    dropout: float = 0.5  # VGGs and AlexNet; ResNets have no dropout
    heads: str = "shared"  # shared: one softmax over all classes (paper); separate: one per task's outputs


@dataclass
class OptimConfig:
    """SGD with ReduceLROnPlateau on the validation loss."""

    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 1e-4
    plateau_patience: int = 5
    plateau_factor: float = 0.1


@dataclass
class TrainerConfig:
    """Lightning Trainer settings: length, hardware, distribution and numerics."""

    epochs: int = 50
    devices: int = 1
    num_nodes: int = 1
    accelerator: str = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    channels_last: bool = False
    progress_bar: bool = True


@dataclass
class WandbConfig:
    """Weights & Biases run metadata; offline unless `mode: online`."""

    project: str = WANDB_PROJECT
    group: str | None = None
    name: str | None = None  # default: the run's name
    job_type: str = "train"
    tags: list[str] = field(default_factory=list)
    mode: str = WANDB_MODES[0]
    upload_checkpoints: bool = False  # the checkpoints' `model` artifacts upload the files (else: by reference)


@dataclass
class OutputConfig:
    """Where runs go: `root/run_name`, `run_name` defaulting to the config's `name`."""

    root: str = "runs/train"
    run_name: str | None = None


@dataclass
class TrainConfig:
    """A whole training run."""

    name: str = "run"
    tasks: list[str] = field(default_factory=list)
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    @property
    def run_dir(self) -> Path:
        """The run directory: `output.root / (output.run_name or name)`."""
        return Path(self.output.root) / (self.output.run_name or self.name)

    @property
    def world_size(self) -> int:
        """Number of training processes."""
        return self.trainer.devices * self.trainer.num_nodes

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON friendly)."""
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Load a YAML config (or the defaults), apply `section.key=value` overrides and validate it."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path)
    for override in overrides:
        apply_override(data, override)
    return config_from_dict(data)


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Build and validate a TrainConfig from a nested mapping; UserError names any unknown key."""
    config = build_dataclass(TrainConfig, data)
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Check values that types alone cannot: choices, positivity, divisibility."""
    check_choice("model.heads", config.model.heads, HEADS)
    check_choice("trainer.precision", config.trainer.precision, PRECISIONS)
    check_choice("wandb.mode", config.wandb.mode, WANDB_MODES)
    if not config.tasks:
        raise UserError("config key tasks is empty; list one or more tasks, e.g. tasks=[face,object]")
    if len(set(config.tasks)) != len(config.tasks):
        raise UserError(f"config key tasks repeats a task: {config.tasks}; list each task once")
    for key, value in (
        ("data.resolution", config.data.resolution),
        ("data.batch_size", config.data.batch_size),
        ("trainer.epochs", config.trainer.epochs),
        ("trainer.devices", config.trainer.devices),
        ("trainer.num_nodes", config.trainer.num_nodes),
        ("model.width", config.model.width),
        ("optim.lr", config.optim.lr),
    ):
        if value <= 0:
            raise UserError(f"config key {key} must be positive, got {value}")
    try:
        check_model(config.model.arch, config.model.batch_norm, config.data.resolution)
    except SettingError as error:
        raise error.named(f"config key {error.key}") from None
    if config.data.batch_size % config.world_size:
        raise UserError(
            f"data.batch_size={config.data.batch_size} (global) is not divisible by the {config.world_size} processes "
            "(trainer.devices x trainer.num_nodes); choose a multiple"
        )


def write_config(config: TrainConfig, directory: str | Path) -> None:
    """Write the resolved config as config.yaml into `directory` (a config `--config` takes), atomically, secrets
    redacted. A run directory's config.json, with the run's identity, is its stage's (`common.stage`)."""
    with atomic_path(Path(directory) / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(redact(config.to_dict()), sort_keys=False))


def read_run_config(run_dir: str | Path) -> TrainConfig:
    """The resolved config saved in a run directory (its config.json, less the run's identity)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(
            f"{run_dir} is not a training run directory (no config.json); pass the directory `specialize train` created"
        )
    saved = read_json(path)
    saved.pop(IDENTITY_KEY, None)
    return config_from_dict(saved)
