"""Running a model on a chosen device for analysis: a moved copy when needed, eval mode, and exact float32 on CUDA."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def tf32(allowed: bool) -> Iterator[None]:
    """Allow or forbid TF32 matmuls and convolutions on CUDA within the block (forbidden = exact float32)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def on_device(model: nn.Module, device: torch.device | str | None) -> Iterator[tuple[nn.Module, torch.device]]:
    """`model` in eval mode on `device` (default: where it is); a copy when it has to move, so the caller's stays
    put."""
    current = next(model.parameters()).device
    target = torch.device(device) if device is not None else current
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", torch.cuda.current_device())
    moved = model if target == current else copy.deepcopy(model).to(target)
    was_training = moved.training
    moved.eval()
    try:
        yield moved, target
    finally:
        moved.train(was_training)
