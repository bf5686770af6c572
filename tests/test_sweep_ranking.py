"""Rankings from given losses: METHOD's greedy schedule worked by hand, and each round's choice (the end-to-end greedy
sweep through Ray is in test_sweep_distributed.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from sweeps.ranking import GreedySchedule, greedy_picks, greedy_ranking


@pytest.mark.parametrize(
    "filters, step, target, rounds, last",
    [
        (32, 1, 6, 6, 1),  # round(0.016 x 32) = 1 per round up to round(0.2 x 32) = 6
        (96, 2, 19, 10, 1),  # 2 per round; 9 rounds reach 18, the 10th picks the 19th alone
        (512, 8, 102, 13, 6),  # VGG16's conv4/5 layers: 12 rounds of 8 reach 96, the 13th picks 6
        (4, 1, 1, 1, 1),  # at least one filter per round and in all
    ],
)
def test_greedy_schedule_of_a_layer(filters, step, target, rounds, last):
    schedule = GreedySchedule.for_layer(filters)
    assert (schedule.step, schedule.target, schedule.rounds) == (step, target, rounds)
    assert [schedule.picks(r * step) for r in range(rounds)] == [step] * (rounds - 1) + [last]


def test_each_round_picks_its_highest_losses_and_the_rest_follow_the_last_round():
    schedule = GreedySchedule(step=2, target=5)  # rounds of 2, 2, 1
    rounds = [
        pd.DataFrame({"filter": range(8), "loss": [0.1, 0.9, 0.3, 0.8, 0.2, 0.5, 0.7, 0.4]}),
        pd.DataFrame({"filter": [0, 2, 4, 5, 6, 7], "loss": [2.0, 1.0, 3.0, 0.5, 1.5, 2.5]}),  # 1 and 3 chosen
        pd.DataFrame({"filter": [0, 2, 5, 6], "loss": [3.1, 3.3, 3.0, 3.2]}),  # 4 and 7 chosen too
    ]
    picks = greedy_picks(rounds, schedule)
    assert [pick["filter"].tolist() for pick in picks] == [[1, 3], [4, 7], [2]]
    ranking = greedy_ranking("conv5_3", "face", rounds, schedule, layer_index=13)
    assert ranking["filter"].tolist() == [1, 3, 4, 7, 2, 6, 0, 5]
    assert ranking["loss"].tolist() == [0.9, 0.8, 3.0, 2.5, 3.3, 3.2, 3.1, 3.0]
    assert ranking["rank"].tolist() == list(range(8)) and set(ranking["layer_index"]) == {13}
