"""The lesion sweep's settings and their defaults, defined once (the `lesion` command and a study's lesion stage
offer them as they are here).

Free of torch and Ray, so that command-line parsers can read the choices and defaults cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from common.errors import SettingError
from common.ray_runner import Resources
from common.typed_config import check_at_least, check_choice
from lightning_modules.layer_names import check_layers, check_unit_names

RANKINGS = ("oneshot", "greedy")
GREEDY_STEP_FRACTION = 0.016  # greedy: the fraction of a layer chosen per round
GREEDY_TARGET_FRACTION = 0.2  # greedy: rounds until this fraction of a layer is chosen


@dataclass(frozen=True)
class SweepSettings:
    """What the sweep lesions, on which images, and how it is split and run; the fields that shape results are
    fixed per output directory."""

    images_per_task: int = 6400  # the authors' code: 50 batches x 128 training images per task
    seed: int = 0  # of the image sample
    layers: tuple[str, ...] = ()  # lesion units; () = every unit of the network (VGG16: conv1_1 ... conv5_3)
    ranking: str = "oneshot"
    greedy_target: float = GREEDY_TARGET_FRACTION  # greedy: rounds until this fraction of a layer is chosen
    filters_per_task: int = 16  # filters per Ray task
    batch_size: int | None = None
    lesions_per_pass: int | None = None
    memory_budget: int | None = None  # bytes per task; None: half the free memory a task sees, probed once
    allow_tf32: bool = False
    resources: Resources = field(default_factory=Resources)

    # Fields that change numbers; a rerun into the same directory must keep them.
    RESULT_FIELDS = (
        "images_per_task",
        "seed",
        "layers",
        "ranking",
        "filters_per_task",
        "batch_size",
        "lesions_per_pass",
        "memory_budget",
        "allow_tf32",
    )

    def __post_init__(self) -> None:
        check_unit_names("layers", self.layers)
        check_choice("ranking", self.ranking, RANKINGS)
        for key in ("images_per_task", "filters_per_task", "batch_size", "lesions_per_pass", "memory_budget"):
            check_at_least(key, getattr(self, key), 1)
        if not 0.0 < self.greedy_target <= 1.0:
            raise SettingError("greedy_target", f"must lie in (0, 1], not {self.greedy_target}")

    def for_units(self, units: tuple[str, ...]) -> SweepSettings:
        """These settings for a network with lesion units `units` (forward order): every unit when `layers` is empty;
        SettingError for a name the network lacks."""
        if not self.layers:
            return replace(self, layers=units)
        check_layers("layers", self.layers, units)
        return self

    def result_fields(self) -> dict:
        """The settings that change the numbers, as stored beside the results (the greedy target only for a greedy
        ranking: it changes no one-shot number)."""
        fields = {key: getattr(self, key) for key in self.RESULT_FIELDS}
        return {**fields, "greedy_target": self.greedy_target} if self.ranking == "greedy" else fields
