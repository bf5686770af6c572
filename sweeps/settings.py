"""The lesion sweep's settings and their defaults, defined once (the `lesion` command offers them as they are here).

Free of torch and Ray, so that command-line parsers can read the choices and defaults cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import UserError
from common.ray_runner import Resources
from lightning_modules.layer_names import CONV_LAYERS

RANKINGS = ("oneshot", "greedy")
DEFAULT_IMAGES_PER_TASK = 6400  # the authors' code: 50 batches x 128 training images per task
DEFAULT_FILTERS_PER_TASK = 16


@dataclass(frozen=True)
class SweepSettings:
    """How the sweep is split and run; the fields that shape results are fixed per output directory."""

    layers: tuple[str, ...] = CONV_LAYERS
    ranking: str = "oneshot"
    filters_per_task: int = DEFAULT_FILTERS_PER_TASK
    batch_size: int | None = None
    lesions_per_pass: int | None = None
    memory_budget: int | None = None  # bytes per task; None: half the free memory a task sees, probed once
    allow_tf32: bool = False
    resources: Resources = field(default_factory=Resources)

    # Fields that change numbers; a rerun into the same directory must keep them.
    RESULT_FIELDS = ("layers", "filters_per_task", "batch_size", "lesions_per_pass", "memory_budget", "allow_tf32")

    def __post_init__(self) -> None:
        unknown = [layer for layer in self.layers if layer not in CONV_LAYERS]
        if unknown:
            raise UserError(f"unknown layer(s) {', '.join(unknown)}; choose from {', '.join(CONV_LAYERS)}")
        if self.ranking not in RANKINGS:
            raise UserError(f"unknown ranking {self.ranking!r}; use one of {', '.join(RANKINGS)}")
        counts = {
            "filters per task": self.filters_per_task,
            "batch size": self.batch_size,
            "lesions per pass": self.lesions_per_pass,
            "memory budget": self.memory_budget,
        }
        for name, value in counts.items():
            if value is not None and value < 1:
                raise UserError(f"{name} must be at least 1, not {value}")

    def result_fields(self) -> dict:
        """The settings that change the numbers, as stored beside the results."""
        return {key: getattr(self, key) for key in self.RESULT_FIELDS}
