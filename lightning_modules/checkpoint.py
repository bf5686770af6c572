"""The network a training config describes (`build_model`) and `load_model(checkpoint)`: a trained network with its
task label space and training config, for every analysis. Free of Lightning, so analyses load models cheaply.

Checkpoints are shared between labs, so they are data, never code: `read_checkpoint`, the one reader of .ckpt
files (`load_model` and training resumes use it), loads with `torch.load(weights_only=True)`, which accepts
tensors and plain Python data only and refuses, without running it, anything a crafted file asks to import.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.errors import UserError
from common.io import file_sha256
from data_pipeline.label_space import LabelSpace
from lightning_modules.architectures import build_network
from lightning_modules.config import ModelConfig, TrainConfig, config_from_dict
from lightning_modules.heads import OutputHeads

MODEL_PREFIX = "model."


@dataclass(frozen=True)
class LoadedModel:
    """A trained network (eval mode, CPU) and what it was trained on."""

    model: nn.Module
    label_space: LabelSpace
    config: TrainConfig
    checkpoint: Path
    sha256: str

    @property
    def output_heads(self) -> OutputHeads:
        """The softmax heads the network was trained with: every analysis scores its answers through them."""
        return OutputHeads.of(self.label_space, self.config.model.heads)


def build_model(label_space: LabelSpace, model_config: ModelConfig) -> nn.Module:
    """The network of a config's `model` section (`model.arch`) for a label space (one output per class of every
    task)."""
    return build_network(
        model_config.arch,
        label_space.total_classes,
        width=model_config.width,
        batch_norm=model_config.batch_norm,
        dropout=model_config.dropout,
    )


def load_model(checkpoint_path: str | os.PathLike) -> LoadedModel:
    """Load a `specialize train` checkpoint; UserError when it is missing or not one of ours."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass a .ckpt from a run's checkpoints/ directory")
    checkpoint = read_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    if "config" not in hparams or "label_space" not in hparams:
        raise UserError(
            f"{path} is not a specialize training checkpoint (no config/label_space); "
            "pass a .ckpt written by specialize train"
        )
    label_space = LabelSpace.from_dict(hparams["label_space"])
    config = config_from_dict(hparams["config"])
    model = build_model(label_space, config.model)
    load_weights(model, checkpoint["state_dict"], path)
    return LoadedModel(
        model=model.eval(), label_space=label_space, config=config, checkpoint=path, sha256=file_sha256(path)
    )


def checkpoint_config(checkpoint_path: str | os.PathLike) -> TrainConfig:
    """The training config a checkpoint holds, read without its weights (memory-mapped); UserError as `load_model`."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass a .ckpt from a run's checkpoints/ directory")
    checkpoint = read_checkpoint(path, mmap=True)
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    if "config" not in hparams:
        raise UserError(
            f"{path} is not a specialize training checkpoint (no config); pass a .ckpt written by specialize train"
        )
    return config_from_dict(hparams["config"])


def read_checkpoint(path: str | os.PathLike, mmap: bool = False) -> Any:
    """The contents of a .ckpt, on the CPU, read as data only (tensors, numbers, strings, lists, dicts).

    UserError when the file asks for any other Python object (a crafted file: refused, never run) or cannot be
    read (cut short, not a checkpoint). `mmap` maps tensors instead of reading them (cheap peeks).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        named = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if named is None:  # not a pickle at all, or a damaged one
            raise UserError(
                f"cannot read checkpoint {path} (not a checkpoint, or damaged); pass a .ckpt written by "
                "specialize train"
            ) from None
        raise UserError(
            f"refused to load checkpoint {path}: it holds Python objects other than tensors and plain data, "
            f"which could run code when loaded (it asks for {named.group(1)}); load only .ckpt files "
            "written by specialize train"
        ) from None
    except Exception as error:  # a truncated or foreign file: report it in one line
        first_line = str(error).splitlines()[0].split(". ")[0] if str(error) else ""  # its first sentence
        raise UserError(
            f"cannot read checkpoint {path} ({type(error).__name__}: {first_line}); pass a .ckpt written "
            "by specialize train"
        ) from None


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a whole checkpoint file (a zip archive with its directory and pickle), without loading it:
    False for a file cut short by a crash or a full disk."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """Copy a TaskModule state dict into `model`; UserError when the architectures differ."""
    weights = {
        key.removeprefix(MODEL_PREFIX): value for key, value in state_dict.items() if key.startswith(MODEL_PREFIX)
    }
    load_matching(
        model,
        weights,
        f"{path} does not match the network its config describes",
        "the checkpoint is of another architecture",
    )


def load_matching(model: nn.Module, weights: dict[str, torch.Tensor], problem: str, fix: str) -> None:
    """Copy `weights` (a state dict in `model`'s layout) into `model`; UserError "<problem> (<tensor>: found <shape>,
    model <shape>); <fix>" naming the first tensor, in the model's order, that is missing, extra or of another
    shape."""
    expected = model.state_dict()
    mismatched = [  # the model's tensors in its own order, then the extra ones
        key
        for key in [*expected, *sorted(weights.keys() - expected.keys())]
        if key not in weights or key not in expected or tuple(weights[key].shape) != tuple(expected[key].shape)
    ]
    if mismatched:
        key = mismatched[0]
        found = tuple(weights[key].shape) if key in weights else "missing"
        wanted = tuple(expected[key].shape) if key in expected else "absent"
        raise UserError(f"{problem} ({key}: found {found}, model {wanted}); {fix}")
    model.load_state_dict(weights)
