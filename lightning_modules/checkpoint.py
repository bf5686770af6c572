"""The network a training config describes (`build_model`) and `load_model(checkpoint)`: a trained network with its
task label space and training config, for every analysis. Free of Lightning, so analyses load models cheaply."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
import torch

from data_pipeline.label_space import LabelSpace
from lightning_modules.config import ModelConfig, TrainConfig, config_from_dict
from lightning_modules.heads import OutputHeads
from lightning_modules.vgg import VGG, vgg16
from common.errors import UserError
from common.io import file_sha256

MODEL_PREFIX = "model."


@dataclass(frozen=True)
class LoadedModel:
    """A trained VGG16 (eval mode, CPU) and what it was trained on."""

    model: VGG
    label_space: LabelSpace
    config: TrainConfig
    checkpoint: Path
    sha256: str

    @property
    def output_heads(self) -> OutputHeads:
        """The softmax heads the network was trained with: every analysis scores its answers through them."""
        return OutputHeads.of(self.label_space, self.config.model.heads)


def build_model(label_space: LabelSpace, model_config: ModelConfig) -> VGG:
    """The VGG16 for a label space (one output per class of every task) and a config's `model` section."""
    return vgg16(label_space.total_classes, width=model_config.width, batch_norm=model_config.batch_norm,
                 dropout=model_config.dropout)


def load_model(checkpoint_path: str | os.PathLike) -> LoadedModel:
    """Load a `specialize train` checkpoint; UserError when it is missing or not one of ours."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass a .ckpt from a run's checkpoints/ directory")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated or foreign file: report it in one line
        raise UserError(f"cannot read checkpoint {path} ({type(error).__name__}: {error}); pass a .ckpt written by specialize train") from None
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    if "config" not in hparams or "label_space" not in hparams:
        raise UserError(f"{path} is not a specialize training checkpoint (no config/label_space); pass a .ckpt written by specialize train")
    label_space = LabelSpace.from_dict(hparams["label_space"])
    config = config_from_dict(hparams["config"])
    model = build_model(label_space, config.model)
    load_weights(model, checkpoint["state_dict"], path)
    return LoadedModel(model=model.eval(), label_space=label_space, config=config, checkpoint=path,
                       sha256=file_sha256(path))


def load_weights(model: VGG, state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """Copy a TaskModule state dict into `model`; UserError when the architectures differ."""
    weights = {key.removeprefix(MODEL_PREFIX): value for key, value in state_dict.items() if key.startswith(MODEL_PREFIX)}
    expected = model.state_dict()
    mismatched = sorted(key for key in expected.keys() | weights.keys()
                        if key not in weights or key not in expected or weights[key].shape != expected[key].shape)
    if mismatched:
        key = mismatched[0]
        found = tuple(weights[key].shape) if key in weights else "missing"
        wanted = tuple(expected[key].shape) if key in expected else "absent"
        raise UserError(f"{path} does not match the VGG16 its config describes ({key}: checkpoint {found}, model {wanted}); "
                        "the checkpoint is of another architecture")
    model.load_state_dict(weights)
