"""Filter rankings from lesion losses: one-shot (each filter alone) and greedy (METHOD's rounds).

A ranking table has one row per (layer, task, filter): layer, layer_index, task, rank (0 = most important),
filter, loss. One-shot: filters by their single-lesion loss, highest first. Greedy: filters in the order
they were chosen, `loss` being the loss with that filter lesioned together with those chosen in earlier rounds
(the loss that chose it); filters never chosen follow, ordered by their loss in the last round.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import pandas as pd

from sweeps.settings import GREEDY_STEP_FRACTION, GREEDY_TARGET_FRACTION

RANKING_COLUMNS = ("layer", "layer_index", "task", "rank", "filter", "loss")


def by_loss(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered by loss, highest first; ties by filter index, so the order is reproducible."""
    return frame.sort_values(["loss", "filter"], ascending=[False, True], kind="stable")


def oneshot_ranking(filter_losses: pd.DataFrame) -> pd.DataFrame:
    """Per layer and task, filters by their single-lesion loss, highest first."""
    parts = [
        ranked(layer, task, by_loss(group), int(group["layer_index"].iloc[0]))
        for (layer, task), group in _groups(filter_losses)
    ]
    return pd.concat(parts, ignore_index=True)


def ranked(layer: str, task: str, ordered: pd.DataFrame, layer_index: int) -> pd.DataFrame:
    """Ranking rows of one layer (the network's `layer_index`-th unit) and task from rows already in rank order
    (columns filter, loss)."""
    return pd.DataFrame(
        {
            "layer": layer,
            "layer_index": layer_index,
            "task": task,
            "rank": range(len(ordered)),
            "filter": ordered["filter"].to_numpy(),
            "loss": ordered["loss"].to_numpy(),
        },
        columns=list(RANKING_COLUMNS),
    )


def _groups(frame: pd.DataFrame):
    """(layer, task) groups in layer order (`layer_index`), then task order of first appearance."""
    tasks = list(dict.fromkeys(frame["task"]))
    layer_order = dict(zip(frame["layer"], frame["layer_index"]))
    keys = sorted(
        {(layer, task) for layer, task in zip(frame["layer"], frame["task"])},
        key=lambda key: (layer_order[key[0]], tasks.index(key[1])),
    )
    grouped = frame.groupby(["layer", "task"], sort=False)
    return [(key, grouped.get_group(key)) for key in keys]


@dataclass(frozen=True)
class GreedySchedule:
    """How many filters of a layer the greedy ranking chooses per round, and in all."""

    step: int
    target: int

    @classmethod
    def for_layer(
        cls,
        num_filters: int,
        step_fraction: float = GREEDY_STEP_FRACTION,
        target_fraction: float = GREEDY_TARGET_FRACTION,
    ) -> GreedySchedule:
        """`step_fraction` of the layer per round (at least 1) until `target_fraction` (at least 1) are chosen."""
        return cls(step=max(1, round(step_fraction * num_filters)), target=max(1, round(target_fraction * num_filters)))

    @property
    def rounds(self) -> int:
        """Number of rounds; round 0 is the one-shot sweep."""
        return math.ceil(self.target / self.step)

    def picks(self, chosen_so_far: int) -> int:
        """Filters to choose in the round that starts with `chosen_so_far` chosen."""
        return min(self.step, self.target - chosen_so_far)


def greedy_picks(rounds: Sequence[pd.DataFrame], schedule: GreedySchedule) -> list[pd.DataFrame]:
    """The rows (filter, loss) chosen in each of the given rounds: each round's highest losses."""
    picks: list[pd.DataFrame] = []
    for frame in rounds:
        picks.append(by_loss(frame).head(schedule.picks(sum(map(len, picks)))))
    return picks


def chosen_filters(rounds: Sequence[pd.DataFrame], schedule: GreedySchedule) -> list[int]:
    """The filters chosen after the given rounds, in the order chosen."""
    return [int(f) for pick in greedy_picks(rounds, schedule) for f in pick["filter"]]


def greedy_ranking(
    layer: str, task: str, rounds: Sequence[pd.DataFrame], schedule: GreedySchedule, layer_index: int
) -> pd.DataFrame:
    """The greedy ranking of one layer (the network's `layer_index`-th unit) and task from all its rounds' losses
    (frames with columns filter, loss)."""
    picks = greedy_picks(rounds, schedule)
    last = by_loss(rounds[-1])
    rest = last[~last["filter"].isin(pd.concat(picks)["filter"])]
    return ranked(layer, task, pd.concat([*picks, rest]), layer_index)


def lesion_count(fraction: float, num_filters: int, rounding: str = "nearest") -> int:
    """Number of filters a fraction of a layer lesions: fraction x filters rounded to the nearest integer, halves up
    ("nearest": 20% of 64 -> 13), or down ("floor": 20% of 64 -> 12). The fraction counts as the decimal it is written
    as, so products are exact (0.15 x 10 is 1.5, not 1.4999999999999998)."""
    exact = Fraction(str(fraction)) * num_filters
    return math.floor(exact + Fraction(1, 2)) if rounding == "nearest" else math.floor(exact)


def top_filters(ranking: pd.DataFrame, layer: str, task: str, fraction: float, rounding: str = "nearest") -> list[int]:
    """The top `fraction` of `layer`'s filters in `task`'s ranking (rank 0 = most important), counted by `rounding`."""
    rows = ranking[(ranking["layer"] == layer) & (ranking["task"] == task)].sort_values("rank")
    if rows.empty:
        raise KeyError(f"the ranking has no rows for layer {layer} and task {task!r}")
    return [int(f) for f in rows["filter"].iloc[: lesion_count(fraction, len(rows), rounding)]]
