"""The segregation analysis' settings and their defaults, defined once (the commands and the study offer them as they
are here). Free of torch and Ray, so that command-line parsers can read them cheaply."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from analysis.bootstrap import DEFAULT_RESAMPLES
from common.errors import SettingError
from common.ray_runner import Resources
from common.typed_config import check_at_least, check_choice
from lightning_modules.layer_names import check_unit_names

# Accuracy scopes -> the prediction column each reads: the network's top-1, over all outputs (METHOD's measure, the
# default; over the image's own head for `model.heads: separate`), or top-1 restricted to the evaluated task's outputs.
SCOPES: dict[str, str] = {"all_outputs": "correct", "task_outputs": "correct_within_task"}
DEFAULT_SCOPE = "all_outputs"
DEFAULT_BATCH_SIZE = 256  # test images read (decoded) per batch; the evaluation engine plans its own passes
DEFAULT_IMAGES_PER_UNIT = 1024  # test images per unit of work (a slice of one task's test file with every condition)
# How a layer's top-fraction count is rounded: fraction x filters to the nearest integer, halves up (20% of 64 filters
# -> 12.8 -> 13, the default), or down (-> 12). METHOD does not say; conv1 results depend on it.
ROUNDINGS = ("nearest", "floor")
# The permutation null (`analysis.segregation.null`): how the classes are dealt into pseudo-tasks (the real tasks'
# class counts, or all classes pooled and halved: `task_groups.random_grouping`), and how many partitions the
# command draws by default: 20 makes p < 0.05 reachable (its least p is 1/21); papers should draw more (200: 0.005).
PARTITION_SCHEMES = ("sizes", "halves")
DEFAULT_CLI_NULL_PARTITIONS = 20
SIGNIFICANCE = 0.05  # the p-value below which figures, the demo and the report mark a layer


@dataclass(frozen=True)
class SegregationSettings:
    """What the analysis computes. `fraction` is the headline fraction; `fractions` adds more to the tables."""

    fraction: float = 0.2
    fractions: tuple[float, ...] = ()
    n_bootstraps: int = DEFAULT_RESAMPLES
    seed: int = 0
    random_tasks: bool = False
    level: float = 0.95
    batch_size: int = DEFAULT_BATCH_SIZE
    images_per_unit: int = DEFAULT_IMAGES_PER_UNIT  # not part of the results, like the resources
    figure_layer: str | None = None  # layer of the normalised-performance figure; default: the last swept layer
    rounding: str = "nearest"  # of the top-fraction count of a layer (ROUNDINGS)
    null_partitions: int = 0  # random partitions of the permutation null (0: none; the command's default is 20)
    partition: str = "sizes"  # how the null (and --random-tasks) deals classes into pseudo-tasks (PARTITION_SCHEMES)
    resources: Resources = field(default_factory=Resources)  # per Ray task; not part of the results

    def __post_init__(self) -> None:
        for key, values in (("fraction", [self.fraction]), ("fractions", self.fractions)):
            outside = [value for value in values if not 0.0 <= value <= 1.0]
            if outside:
                raise SettingError(key, f"must lie in [0, 1], not {outside[0]}")
        check_at_least("n_bootstraps", self.n_bootstraps, 1)
        check_at_least("batch_size", self.batch_size, 1)
        check_at_least("images_per_unit", self.images_per_unit, 1)
        if not 0.0 < self.level < 1.0:
            raise SettingError("level", f"must lie in (0, 1), not {self.level}")
        check_choice("rounding", self.rounding, ROUNDINGS)
        check_choice("partition", self.partition, PARTITION_SCHEMES)
        check_at_least("null_partitions", self.null_partitions, 0)
        if self.random_tasks and self.null_partitions:
            raise SettingError(
                "null_partitions", "is for the network's own tasks; the random-task control is partition 1 of it"
            )
        if self.figure_layer is not None:
            check_unit_names("figure_layer", [self.figure_layer])

    def result_fields(self) -> dict[str, Any]:
        """Every setting but how the work is spread (resources, images per unit): what the tables, summary and figures
        depend on."""
        return {key: value for key, value in asdict(self).items() if key not in ("resources", "images_per_unit")}

    @property
    def all_fractions(self) -> list[float]:
        """Every fraction evaluated, ascending."""
        return sorted({float(self.fraction), *map(float, self.fractions)})
