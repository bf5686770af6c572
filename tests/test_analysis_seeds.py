"""A study's seed aggregation (`analysis.seeds.aggregate_study`) on planted trial outputs: the index at the headline
fraction and default scope only, grouped by pair, condition and layer; every interval's `low` and `high` against the
t-interval computed here from the planted numbers; the intact accuracy read from the top-1 over all outputs (the test
table's, or the validation top-1 of the last epoch), never another scope or metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.accuracy import ACCURACY_FILE
from analysis.inference import AggregateSettings
from analysis.seeds import aggregate_study
from common.errors import UserError
from common.io import read_json, write_parquet
from common.layout import ACCURACY_DIR, CONTROL_DIR, DECODE_DIR, RSA_DIR, SEGREGATION_DIR
from common.wandb_runs import WandbTarget

SEEDS = (0, 1, 2)
LAYERS = ("conv1_1", "conv5_3")
FRACTION = 0.2


def planted_si(pair: str, condition: str, seed: int, layer_index: int) -> float:
    """The index planted for a trial: every pair, condition, seed and layer its own value, not a linear function of
    the seed (so that the SD, and with it the interval, differs between groups)."""
    base = {"face+object": 0.5, "face+car": 0.2}[pair] + (0.3 if condition == "network" else 0.0)
    return base + 0.05 * layer_index + [0.0, 0.04, 0.13][seed] * (1 + layer_index) * (1.5 if pair == "face+car" else 1)


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval of the mean, computed here independently of `analysis.inference`."""
    mean, sem = np.mean(values), stats.sem(values)
    return mean, *stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem)


def segregation_rows(pair: str, tasks: tuple[str, str], condition: str, seed: int) -> pd.DataFrame:
    """A trial's segregation table: the headline fraction and scope, plus decoys at another fraction and scope."""
    rows = []
    for fraction in (0.1, FRACTION):
        for scope in ("all_outputs", "task_outputs"):
            for index, layer in enumerate(LAYERS, start=1):
                headline = fraction == FRACTION and scope == "all_outputs"
                si = planted_si(pair, condition, seed, index) if headline else 9.0
                row = {"layer": layer, "layer_index": index, "fraction": fraction, "scope": scope}
                row |= {"task_a": tasks[0], "task_b": tasks[1], "si": si, "si_low": si - 0.1, "si_high": si + 0.1}
                if condition == "network":  # null partitions: the null the paired test subtracts
                    row |= {"null_mean": 0.1 * index + 0.01 * seed, "null_low": 0.0, "null_high": 0.3}
                    row |= {"p_value": 0.01 * (seed + 1), "n_null": 99}
                rows.append(row)
    return pd.DataFrame(rows)


def tasks_hurt(pair: str, condition: str, seed: int, layer_index: int) -> int:
    """How many of a pair's two tasks lose every test image to their own lesion in the planted predictions (0, 1: the
    first, 2: both; never the other task's): the index is then half that on every class-then-image resample."""
    return min(2, max(0, seed - 1 + layer_index - (condition != "network") + (pair == "face+car")))


def prediction_rows(pair: str, tasks: tuple[str, str], condition: str, seed: int) -> pd.DataFrame:
    """A trial's per-image predictions (two classes of two images per task), the headline fraction's answers in the
    default scope as `tasks_hurt` says, decoys at another fraction and in the other scope (every image wrong)."""
    frames = []
    conditions = [("intact", "none", 0.0)]
    conditions += [(layer, task, fraction) for layer in LAYERS for task in tasks for fraction in (0.1, FRACTION)]
    for layer, lesioned, fraction in conditions:
        for position, task in enumerate(tasks):
            labels = np.repeat([2 * position, 2 * position + 1], 2)
            hurt = lesioned == task and position < tasks_hurt(pair, condition, seed, LAYERS.index(layer) + 1)
            correct = not hurt if fraction in (0.0, FRACTION) else lesioned != task
            frames.append(
                pd.DataFrame(
                    {"layer": layer, "lesioned_task": lesioned, "fraction": fraction, "eval_task": task}
                    | {"image": np.arange(4), "class": [f"c{label}" for label in labels], "label": labels}
                    | {"prediction": labels if correct else labels + 1, "correct": correct}
                    | {"prediction_within_task": labels + 1, "correct_within_task": False}
                )
            )
    return pd.concat(frames, ignore_index=True)


def accuracy_rows(seed: int, tasks: tuple[str, ...]) -> pd.DataFrame:
    """A trial's test accuracy table: the top-1 over all outputs, and a decoy within the task's outputs."""
    rows = []
    for position, task in enumerate(tasks):
        for scope, shift in (("all_outputs", 0.0), ("task_outputs", 0.2)):
            accuracy = 0.6 + 0.1 * position + 0.01 * seed + shift
            rows.append(
                {"task": task, "scope": scope, "accuracy": accuracy}
                | {"accuracy_low": accuracy - 0.03, "accuracy_high": accuracy + 0.02, "images": 100, "classes": 10}
            )
    return pd.DataFrame(rows)


def planted_trials(root: Path) -> pd.DataFrame:
    """Two dual-task pairs and a single-task control, three seeds each, with segregation (network and random-task
    control), decoding and RSA tables; the control's last seed has no test accuracy (its validation top-1 counts)."""
    pairs = {"face+object": ("face", "object"), "face+car": ("face", "car")}
    records = []
    for seed in SEEDS:
        for pair, tasks in pairs.items():
            directory = root / f"{pair}_{seed}"
            for sub, condition in ((SEGREGATION_DIR, "network"), (CONTROL_DIR, "random tasks")):
                names = tasks if condition == "network" else ("pseudo1", "pseudo2")
                write_parquet(directory / sub / "segregation.parquet", segregation_rows(pair, names, condition, seed))
                write_parquet(directory / sub / "predictions.parquet", prediction_rows(pair, names, condition, seed))
            write_parquet(directory / ACCURACY_DIR / ACCURACY_FILE, accuracy_rows(seed, tasks))
            decoding = pd.DataFrame(
                {"network": pair, "task": "face", "layer": "fc7", "layer_index": 15, "chance": 1 / 3}
                | {"accuracy": [0.5 + 0.1 * seed**2 + (0.2 if pair == "face+car" else 0.0)]}
            )
            write_parquet(directory / DECODE_DIR / "decoding.parquet", decoding)
            rsa = pd.DataFrame(
                {"network": pair, "layer": list(LAYERS), "layer_index": [1, 13], "correlation": [0.1 * seed, 0.3]}
            )
            write_parquet(directory / RSA_DIR / "rsa.parquet", rsa)
            records.append({"name": directory.name, "network": pair, "seed": seed, "pair": True, "tasks": list(tasks)})
            records[-1] |= {"directory": str(directory), "val/face/top1": 0.01, "val/face/top5": 0.02}
        directory = root / f"face_{seed}"
        if seed < 2:
            write_parquet(directory / ACCURACY_DIR / ACCURACY_FILE, accuracy_rows(seed, ("face",)))
        records.append({"name": directory.name, "network": "face", "seed": seed, "pair": False, "tasks": ["face"]})
        records[-1] |= {"directory": str(directory), "val/face/top1": 0.7 + seed / 100, "val/face/top5": 0.95}
    return pd.DataFrame(records)


@pytest.fixture(scope="module")
def trials(tmp_path_factory) -> pd.DataFrame:
    return planted_trials(tmp_path_factory.mktemp("seeds") / "trials")


@pytest.fixture(scope="module")
def aggregated(tmp_path_factory, trials) -> Path:
    out = tmp_path_factory.mktemp("aggregate") / "study"
    aggregate_study(out, trials, FRACTION, WandbTarget())
    return out


def test_index_across_seeds_is_grouped_by_pair_condition_and_layer_with_its_t_interval(aggregated):
    out = aggregated
    summary = read_json(out / "summary.json")
    seeds = pd.read_parquet(out / "seeds.parquet")
    assert (seeds["si"] < 9).all() and len(seeds) == 2 * 2 * len(SEEDS) * len(LAYERS)  # the headline rows only
    pairs = pd.read_parquet(out / "pairs.parquet")
    assert len(pairs) == 2 * 2 * len(LAYERS)
    for pair in ("face+object", "face+car"):
        for condition in ("network", "random tasks"):
            for index, layer in enumerate(LAYERS, start=1):
                values = [planted_si(pair, condition, seed, index) for seed in SEEDS]
                mean, low, high = t_interval(values)
                row = pairs[(pairs.pair == pair) & (pairs.condition == condition) & (pairs.layer == layer)]
                assert len(row) == 1 and row.n_seeds.item() == len(SEEDS)
                assert row[["mean_si", "low", "high"]].to_numpy()[0] == pytest.approx([mean, low, high], abs=1e-12)
                stored = summary["pairs"][f"{pair}/{condition}/{layer}"]
                assert [stored["mean"], stored["low"], stored["high"]] == pytest.approx([mean, low, high], abs=1e-12)


def test_paired_tests_subtract_each_seeds_null_with_the_t_interval_of_the_difference(aggregated):
    out = aggregated
    summary = read_json(out / "summary.json")
    tests = pd.read_parquet(out / "paired_tests.parquet")
    assert len(tests) == 2 * len(LAYERS) and set(tests.null_source) == {"null partitions"}
    for pair in ("face+object", "face+car"):
        for index, layer in enumerate(LAYERS, start=1):
            differences = [planted_si(pair, "network", seed, index) - (0.1 * index + 0.01 * seed) for seed in SEEDS]
            mean, low, high = t_interval(differences)
            row = tests[(tests.pair == pair) & (tests.layer == layer)]
            assert row[["mean_difference", "low", "high"]].to_numpy()[0] == pytest.approx([mean, low, high], abs=1e-12)
            stored = summary["paired_tests"][f"{pair}/{layer}"]
            assert [stored["mean_difference"], stored["low"], stored["high"]] == pytest.approx([mean, low, high])


def test_decoding_and_rsa_across_seeds_keep_their_keys_and_t_intervals(aggregated):
    out = aggregated
    decoding = pd.read_parquet(out / "decoding.parquet").set_index("network")
    for pair, shift in (("face+object", 0.0), ("face+car", 0.2)):
        mean, low, high = t_interval([0.5 + 0.1 * seed**2 + shift for seed in SEEDS])
        assert decoding.loc[pair, ["mean", "low", "high"]].tolist() == pytest.approx([mean, low, high], abs=1e-12)
        assert decoding.loc[pair, ["task", "layer", "layer_index", "chance"]].tolist() == ["face", "fc7", 15, 1 / 3]
    rsa = pd.read_parquet(out / "rsa.parquet")
    assert len(rsa) == 2 * len(LAYERS)
    first = rsa[(rsa.network == "face+car") & (rsa.layer == "conv1_1")]
    assert first[["mean", "low", "high"]].to_numpy()[0] == pytest.approx(t_interval([0.0, 0.1, 0.2]), abs=1e-12)


def test_intact_accuracy_is_the_top1_over_all_outputs_or_the_last_validation_top1(aggregated):
    out = aggregated
    intact = pd.read_parquet(out / "intact.parquet")
    assert len(intact) == 2 * 2 * len(SEEDS) + len(SEEDS)
    for row in intact.itertuples():
        if row.network == "face" and row.seed == 2:  # no test accuracy: the validation top-1 of the last epoch
            assert (row.split, row.top1) == ("validation", 0.72) and np.isnan(row.low) and np.isnan(row.high)
            continue
        position = 0 if row.task == "face" else 1
        accuracy = 0.6 + 0.1 * position + 0.01 * row.seed
        assert row.split == "test" and row.kind == ("control" if row.network == "face" else "pair")
        assert [row.top1, row.low, row.high] == pytest.approx([accuracy, accuracy - 0.03, accuracy + 0.02])


def test_the_hierarchical_bootstrap_resamples_each_seeds_predictions_when_the_study_asks_for_it(
    aggregated, trials, tmp_path
):
    # Every planted resample of a seed gives that seed's index (all of a condition's images answer alike), so the
    # three-level interval spans the seeds' indices: each of 3 seeds is drawn alone in 1/27 = 3.7% of the resamples
    # (about 148 of 4,000), more than the 2.5% in each tail, so the 95% interval is exactly [min, max] of the seeds.
    assert "boot_low" not in pd.read_parquet(aggregated / "pairs.parquet").columns  # the default: the t-interval alone
    settings = AggregateSettings(bootstrap="hierarchical", resamples=4000, seed=3)
    aggregate_study(tmp_path / "study", trials, FRACTION, WandbTarget(), settings)
    pairs = pd.read_parquet(tmp_path / "study" / "pairs.parquet")
    summary = read_json(tmp_path / "study" / "summary.json")
    assert summary["bootstrap"] == {"bootstrap": "hierarchical", "resamples": 4000, "seed": 3}
    assert len(pairs) == 2 * 2 * len(LAYERS)
    for row in pairs.itertuples():
        indices = [tasks_hurt(row.pair, row.condition, seed, row.layer_index) / 2 for seed in SEEDS]
        assert (row.boot_low, row.boot_high) == (min(indices), max(indices)), row
        mean, low, high = t_interval([planted_si(row.pair, row.condition, seed, row.layer_index) for seed in SEEDS])
        assert [row.mean_si, row.low, row.high] == pytest.approx([mean, low, high], abs=1e-12)  # beside, untouched
        stored = summary["pairs"][f"{row.pair}/{row.condition}/{row.layer}"]
        assert (stored["boot_low"], stored["boot_high"]) == (row.boot_low, row.boot_high)


def test_the_hierarchical_bootstrap_refuses_a_seed_without_predictions_in_one_line(trials, tmp_path):
    lacking = trials.copy()
    lacking.loc[0, "directory"] = str(tmp_path / "elsewhere")
    write_parquet(
        tmp_path / "elsewhere" / SEGREGATION_DIR / "segregation.parquet",
        segregation_rows("face+object", ("face", "object"), "network", 0),
    )
    with pytest.raises(UserError, match=r"predictions.parquet is missing; rerun that trial's segregation") as error:
        aggregate_study(
            tmp_path / "study", lacking, FRACTION, WandbTarget(), AggregateSettings(bootstrap="hierarchical")
        )
    assert "\n" not in str(error.value) and not (tmp_path / "study").exists()
