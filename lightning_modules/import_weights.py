"""`specialize import`: trained weights from elsewhere (a torchvision-layout state dict) and the class names of each
task become a specialize checkpoint, which every analysis reads like one `specialize train` wrote.

The weights file is data, never code: a `.safetensors` file is read by safetensors, anything else by
`torch.load(weights_only=True)` (`checkpoint.read_checkpoint`). Accepted layouts: a plain state dict (torchvision's
`model.state_dict()`), or a dict holding one under `state_dict` (Lightning) or `model`; a `module.` (DDP) or `model.`
prefix on every key is removed. The architecture's options that change tensor shapes are read from the weights when
not given: the width from the first conv's filters (64 x width) and, for the VGGs, batch norm from its tensors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from common.errors import UserError
from common.io import atomic_path
from data_pipeline.label_space import LabelSpace
from lightning_modules.architectures import VGGS
from lightning_modules.checkpoint import MODEL_PREFIX, build_model, load_matching, read_checkpoint
from lightning_modules.config import TrainConfig, config_from_dict

WRAPPER_KEYS = ("state_dict", "model")
KEY_PREFIXES = ("module.", "model.")
FIRST_CONV_FILTERS = 64  # every registered architecture's first conv at width 1


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (`.safetensors`, or a torch file read as data only), unwrapped and unprefixed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--weights {path} does not exist; pass a .pth, .pt or .safetensors state dict")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            contents: Any = load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise UserError(f"cannot read --weights {path} as safetensors ({error})") from None
    else:
        contents = read_checkpoint(path)
    for key in WRAPPER_KEYS:
        if isinstance(contents, Mapping) and isinstance(contents.get(key), Mapping):
            contents = contents[key]
    if not isinstance(contents, Mapping) or not all(isinstance(v, torch.Tensor) for v in contents.values()):
        raise UserError(
            f"--weights {path} holds no state dict (a mapping of tensor names to tensors); save one with "
            "torch.save(model.state_dict(), FILE) or safetensors.torch.save_file"
        )
    weights = dict(contents)
    for prefix in KEY_PREFIXES:
        if weights and all(key.startswith(prefix) for key in weights):
            weights = {key.removeprefix(prefix): value for key, value in weights.items()}
    return weights


def read_classes(spec: str) -> tuple[str, list[str]]:
    """`TASK=FILE` -> (task, the class names in FILE, one a line, in output order; blank lines skipped)."""
    task, separator, file = spec.partition("=")
    if not separator or not task or not file:
        raise UserError(f"--classes {spec!r} is not TASK=FILE; e.g. --classes object=classes.txt")
    path = Path(file)
    if not path.is_file():
        raise UserError(f"--classes {task}={file}: no such file; list the task's class names one a line, in order")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise UserError(f"--classes {task}={file} lists no classes; one class name a line, in output order")
    if len(set(names)) != len(names):
        raise UserError(f"--classes {task}={file} repeats a class name; list each class once")
    return task, names


def inferred_width(weights: Mapping[str, torch.Tensor]) -> float:
    """The width whose first conv has the weights' number of filters (64 x width)."""
    first = next((value for value in weights.values() if value.dim() == 4), None)
    if first is None:
        raise UserError("the weights hold no conv layer; pass the state dict of a convolutional network")
    return first.shape[0] / FIRST_CONV_FILTERS


def import_config(
    arch: str,
    label_space: LabelSpace,
    weights: Mapping[str, torch.Tensor],
    width: float | None,
    heads: str,
    resolution: int,
    name: str,
) -> TrainConfig:
    """The training config an imported network is described by (its `model` section, tasks and resolution)."""
    batch_norm = arch in VGGS and any(key.endswith("running_var") for key in weights)
    return config_from_dict(
        {
            "name": name,
            "tasks": list(label_space.tasks),
            "data": {"resolution": resolution, "classes": {t: label_space.num_classes(t) for t in label_space.tasks}},
            "model": {
                "arch": arch,
                "width": width if width is not None else inferred_width(weights),
                "batch_norm": batch_norm,
                "heads": heads,
            },
        }
    )


def import_weights(
    weights_path: str | os.PathLike,
    arch: str,
    classes: Sequence[str],
    out: str | os.PathLike,
    width: float | None = None,
    heads: str = "shared",
    resolution: int = 224,
) -> Path:
    """Write a specialize checkpoint at `out` from a torchvision-layout state dict of `arch` and the `classes`
    (`TASK=FILE` each, in output order); UserError naming the first tensor that does not fit."""
    weights = read_state_dict(weights_path)
    by_task: dict[str, list[str]] = {}
    for spec in classes:
        task, names = read_classes(spec)
        if task in by_task:
            raise UserError(f"--classes names task {task!r} twice; give each task once")
        by_task[task] = names
    if not by_task:
        raise UserError("no --classes given; pass --classes TASK=FILE for each task, in output order")
    label_space = LabelSpace.from_classes(by_task)
    config = import_config(arch, label_space, weights, width, heads, resolution, Path(out).stem)
    model = build_model(label_space, config.model)
    load_matching(
        model,
        weights,
        f"--weights {weights_path} do not fit {arch} at width {config.model.width:g} with "
        f"{label_space.total_classes} outputs ({', '.join(f'{t}: {len(c)}' for t, c in by_task.items())} classes)",
        "check --arch, --width and that the --classes files list every output of the network",
    )
    checkpoint = {
        "state_dict": {MODEL_PREFIX + key: value.detach().clone() for key, value in model.state_dict().items()},
        "hyper_parameters": {"config": config.to_dict(), "label_space": label_space.to_dict()},
        "imported_from": str(Path(weights_path).resolve()),
    }
    out = Path(out)
    if out.parent and not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist; create it or choose another path")
    with atomic_path(out) as tmp:
        torch.save(checkpoint, tmp)
    return out
