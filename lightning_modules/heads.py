"""The output layer's softmax heads (`model.heads`), defined once for training and every analysis of a network.

- `shared` (the paper's dual-task model): one softmax over all outputs. An image's loss is the cross-entropy over
  every output and its answer the top output.
- `separate`: one softmax per task over that task's outputs (its slice of the label space). An image's loss and
  answer use only the outputs of the head its label belongs to, as in training.

Free of Lightning, so that the lesion engine and the analyses use the same definition cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from data_pipeline.label_space import LabelSpace


@dataclass(frozen=True)
class OutputHeads:
    """The softmax heads of an output layer: consecutive groups of `sizes[i]` outputs; () is one head over all."""

    sizes: tuple[int, ...] = ()

    @classmethod
    def of(cls, label_space: LabelSpace, heads: str) -> OutputHeads:
        """The heads of a network over `label_space` with `model.heads` = `heads` (shared or separate)."""
        if heads == "separate":
            return cls(tuple(label_space.num_classes(task) for task in label_space.tasks))
        return cls()

    @property
    def shared(self) -> bool:
        """Whether one softmax spans every output."""
        return len(self.sizes) < 2

    def restrict(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`logits` (N, outputs) with every output outside the head of each row's label set to -inf."""
        if self.shared:
            return logits
        sizes = torch.tensor(self.sizes, device=logits.device)
        head = torch.repeat_interleave(torch.arange(len(self.sizes), device=logits.device), sizes)
        if len(head) != logits.shape[1]:
            raise ValueError(f"heads of {sum(self.sizes)} outputs applied to logits of {logits.shape[1]}")
        return logits.masked_fill(head[labels][:, None] != head[None, :], float("-inf"))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-image cross-entropy over the outputs of each label's head (float32)."""
        return F.cross_entropy(self.restrict(logits, labels).float(), labels, reduction="none")

    def answer(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-image top-1 output among the outputs of each label's head."""
        return self.restrict(logits, labels).argmax(dim=1)
