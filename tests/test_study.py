"""`specialize study`: a tiny study through Ray Tune end to end, killed and resumed; its config and aggregation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers_data import make_tiny_data_dir
from helpers_train import ROOT, wandb_run

from analysis.seeds import across_seeds
from specialize.cli import main

pytestmark = pytest.mark.ray  # starts Ray through the command line


LAYERS = ["conv1_1", "conv5_3"]
RESNET_PAIR = {"resnet": {"config": str(ROOT / "configs/tiny_face_object.yaml"), "overrides": ["model.arch=resnet18"]}}
# an RSA's inputs as the config check wants them (a file, a folder), for configs refused before they are read
RSA_INPUTS = {"stimuli": str(ROOT / "configs/tiny_face.yaml"), "behaviour": str(ROOT / "configs")}


def study_yaml(path: Path, data: Path, out: Path, **changes) -> Path:
    """A tiny study: two pairs and one control, two seeds, one epoch, two swept layers, few images; resources such
    that a seed's three trials run at once on 2 CPUs (a trial takes 0.4 for training and 0.25 for its Ray tasks)."""
    study = {
        "name": "tiny",
        "seeds": [0, 1],
        "output": str(out),
        "pairs": {
            "face_object": {"config": str(ROOT / "configs/tiny_face_object.yaml")},
            "food_object": {"config": str(ROOT / "configs/tiny_food_object.yaml")},
        },
        "controls": {"face": {"config": str(ROOT / "configs/tiny_face.yaml")}},
        "overrides": [f"data.dir={data}", "trainer.epochs=1", "data.num_workers=1"],
        "analyses": {
            "lesion": {"images_per_task": 12, "layers": LAYERS, "resources": {"cpus": 0.25}},
            "segregation": {"n_bootstraps": 50, "resources": {"cpus": 0.25}},
        },
        "resources": {"train": {"cpus": 0.4}},
        **changes,
    }
    path.write_text(yaml.safe_dump(study))
    return path


def study_command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "specialize.cli", "study", "--config", str(config), *extra]


def stamps(directory: Path) -> dict[Path, int]:
    """Modification times of every file under `directory` but W&B's own (its service may still flush logs of a
    killed run)."""
    return {
        path: path.stat().st_mtime_ns
        for path in directory.rglob("*")
        if path.is_file() and "wandb" not in path.relative_to(directory).parts
    }


def changed(before: dict[Path, int], after: dict[Path, int]) -> list[Path]:
    """Files added, removed or modified between two `stamps`."""
    return sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))


@pytest.mark.slow
def test_tiny_study_runs_resumes_after_a_kill_aggregates_decodes_and_runs_rsa(tmp_path, monkeypatch):
    from analysis.representations.activations import Network
    from analysis.representations.decoding import run_decoding
    from analysis.representations.rsa import run_rsa
    from analysis.representations.settings import ActivationSettings, DecodingSettings, RSASettings
    from common.ray_runner import ray_session
    from data_pipeline.behaviour import write_stimulus_list
    from data_pipeline.synth_behaviour import BehaviourSettings, generate_behaviour

    data = make_tiny_data_dir(
        tmp_path,
        tasks=("face", "object", "food"),
        classes=3,
        train=12,
        test=6,
        heldout=2,
        pools=["face+object"],
    )
    # The control (face) also decodes held-out classes and runs RSA against synthetic participants.
    faces = sorted((tmp_path / "synth" / "face" / "heldout").rglob("*.jpg"))
    stimuli = write_stimulus_list(tmp_path / "stimuli.txt", [path for path in faces if int(path.stem) < 3])
    behaviour = generate_behaviour(tmp_path / "behaviour", stimuli, settings=BehaviourSettings(participants=4))
    layers = ["conv5_3", "fc7"]
    quarter = {"cpus": 0.25}
    analyses = {
        "lesion": {"images_per_task": 12, "layers": LAYERS, "resources": quarter},
        "segregation": {"n_bootstraps": 50, "resources": quarter},
        "decoding": {
            "enabled": True,
            "networks": ["face"],
            "extraction": {"layers": layers, "resources": quarter},
            "folds": 3,
        },
        "rsa": {
            "enabled": True,
            "networks": ["face"],
            "stimuli": str(behaviour / "stimuli.txt"),
            "behaviour": str(behaviour),
            "extraction": {"layers": layers, "resources": quarter},
        },
    }
    # One pair and one control: grouping by pair is checked on planted numbers (test_analysis_seeds.py)
    pairs = {"face_object": {"config": str(ROOT / "configs/tiny_face_object.yaml")}}
    config = study_yaml(tmp_path / "study.yaml", data, tmp_path / "runs", pairs=pairs, analyses=analyses)
    study = tmp_path / "runs" / "tiny"
    monkeypatch.setenv("WANDB_MODE", "offline")
    env = {**os.environ, "WANDB_MODE": "offline"}

    # One seed alone (as one job of a Slurm array does): its trials, no aggregation. The commands that are not
    # killed run in this process (as the CLI: `main`), sparing an interpreter's start-up each.
    assert main(["study", "--config", str(config), "--seeds", "0"]) == 0
    assert sorted(path.parent.name for path in study.glob("trials/*/manifest.json")) == [
        "face-seed0",
        "face_object-seed0",
    ]
    assert not (study / "aggregate").exists()

    # Killed (the driver, its Ray and its trials) once a trial of the other seed has finished.
    first = subprocess.Popen(
        study_command(config),
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 900
    while len(list(study.glob("trials/*/manifest.json"))) < 3 and first.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    finished = [path.parent for path in study.glob("trials/*/manifest.json")]  # a trial's manifest is written last
    assert len(finished) == 3
    before = {trial: stamps(trial) for trial in finished}
    done_stages = {
        stage: stamps(stage)
        for stage in study.glob("trials/*/*")
        if (stage / "manifest.json").is_file() and (stage.name != "train" or (stage / "summary.json").is_file())
    }

    assert main(["study", "--config", str(config)]) == 0
    # Finished trials and finished stages of unfinished ones were not redone.
    for trial in finished:
        assert not changed(before[trial], stamps(trial)), trial
    for stage, files in done_stages.items():
        assert not changed(files, stamps(stage)), stage

    trials = pd.read_parquet(study / "trials.parquet")
    assert sorted(trials["name"]) == sorted(f"{n}-seed{s}" for n in ("face_object", "face") for s in (0, 1))
    for pair in ("face_object",):
        for seed in (0, 1):
            for stage in (
                "train/checkpoints/best.ckpt",
                "lesion/ranking.parquet",
                "segregation/summary.json",
                "segregation_random/summary.json",
            ):
                assert (study / "trials" / f"{pair}-seed{seed}" / stage).is_file()
    assert not (study / "trials" / "face-seed0" / "lesion").exists()  # controls are not swept

    seeds = pd.read_parquet(study / "aggregate" / "seeds.parquet")
    assert len(seeds) == 1 * 2 * 2 * len(LAYERS)  # pairs x conditions x seeds x layers
    assert set(seeds["condition"]) == {"network", "random tasks"}
    pairs = pd.read_parquet(study / "aggregate" / "pairs.parquet")
    expected = seeds.groupby(["pair", "condition", "layer"])["si"].mean()
    merged = pairs.set_index(["pair", "condition", "layer"])["mean_si"]
    np.testing.assert_allclose(merged.sort_index().to_numpy(), expected.sort_index().to_numpy(), equal_nan=True)
    # each trial's index is the one its own segregation analysis reports
    own = pd.read_parquet(study / "trials" / "face_object-seed1" / "segregation" / "segregation.parquet")
    own = own[(own.fraction == 0.2) & (own.scope == "all_outputs")].set_index("layer")["si"]
    mine = seeds[(seeds.pair == "face_object") & (seeds.seed == 1) & (seeds.condition == "network")].set_index("layer")[
        "si"
    ]
    pd.testing.assert_series_equal(mine.sort_index(), own.sort_index(), check_names=False)
    intact = pd.read_parquet(study / "aggregate" / "intact.parquet")
    assert set(zip(intact.network, intact.task)) == {
        ("face_object", "face"),
        ("face_object", "object"),
        ("face", "face"),
    }
    # Fig. 1C: the analysed checkpoint's test top-1 of every network; a pair's equals its segregation's intact one
    assert set(intact["split"]) == {"test"} and (intact["low"] <= intact["top1"]).all()
    accuracy = pd.read_parquet(study / "trials" / "face_object-seed1" / "segregation" / "accuracy.parquet")
    accuracy = accuracy[(accuracy.layer == "intact") & (accuracy.scope == "all_outputs")].set_index("eval_task")
    tested = intact[(intact.network == "face_object") & (intact.seed == 1)].set_index("task")["top1"]
    pd.testing.assert_series_equal(tested.sort_index(), accuracy["accuracy"].sort_index(), check_names=False)
    tests = pd.read_parquet(study / "aggregate" / "paired_tests.parquet")
    assert len(tests) == len(LAYERS) and set(tests["n_seeds"]) == {2}
    # each seed's null is its random-task control; '' where no seed's control has an index (NaN at a layer: a task
    # that one epoch leaves without a right answer)
    control = seeds[seeds.condition == "random tasks"].groupby("layer")["si"].apply(lambda si: si.notna().any())
    expected = {layer: "random tasks" if defined else "" for layer, defined in control.items()}
    assert dict(zip(tests["layer"], tests["null_source"])) == expected
    for figure in ("segregation_by_pair", "intact_accuracy"):
        assert (study / "aggregate" / "figures" / f"{figure}.png").stat().st_size > 0

    # --aggregate-only rebuilds the same tables from the finished trials and touches no trial
    trial_files = stamps(study / "trials")
    assert main(["study", "--config", str(config), "--aggregate-only"]) == 0
    assert not changed(trial_files, stamps(study / "trials"))
    pd.testing.assert_frame_equal(pd.read_parquet(study / "aggregate" / "pairs.parquet"), pairs)

    # W&B: one group per study; each trial's runs named <pair>-seed<N> with job types and labels; summary scalars
    trial = study / "trials" / "face_object-seed1"
    train = wandb_run(trial / "train")
    assert (train["group"], train["job_type"], train["name"]) == ("tiny", "train", "face_object-seed1")
    assert (train["config"]["pair"], train["config"]["tasks"], train["config"]["seed"]) == (
        "face_object",
        "face+object",
        1,
    )
    assert set(train["summary"]["val/loss"]) == {"min"} and set(train["summary"]["val/face/top1"]) == {"max"}
    lesion = wandb_run(trial / "lesion")
    assert (lesion["group"], lesion["job_type"], lesion["config"]["pair"]) == ("tiny", "lesion", "face_object")
    segregation = wandb_run(trial / "segregation")
    assert (segregation["group"], segregation["job_type"]) == ("tiny", "segregation")
    assert {f"si/face+object/{layer}" for layer in LAYERS} <= set(segregation["summary"])
    aggregate = wandb_run(study / "aggregate")
    assert (aggregate["group"], aggregate["job_type"]) == ("tiny", "aggregate")
    assert "si/face_object/network/conv5_3" in aggregate["summary"]

    # Decoding and RSA: each control trial's outputs are what `specialize decode` and `rsa` write for its checkpoint
    with ray_session(None):  # one local Ray for the four commands, as a study's trials share one
        for seed in (0, 1):
            network = [Network("face", study / "trials" / f"face-seed{seed}" / "train" / "checkpoints" / "best.ckpt")]
            settings = DecodingSettings(folds=3, extraction=ActivationSettings(layers=tuple(layers), pooling="mean"))
            run_decoding(network, data, tmp_path / f"decode{seed}", settings=settings, progress=False)
            run_rsa(
                network,
                behaviour / "stimuli.txt",
                behaviour,
                tmp_path / f"rsa{seed}",
                RSASettings(extraction=ActivationSettings(layers=tuple(layers))),
                progress=False,
            )
    for seed in (0, 1):
        for stage, table in (("decode", "decoding"), ("rsa", "rsa")):
            pd.testing.assert_frame_equal(
                pd.read_parquet(study / "trials" / f"face-seed{seed}" / stage / f"{table}.parquet"),
                pd.read_parquet(tmp_path / f"{stage}{seed}" / f"{table}.parquet"),
            )
    for pair in ("face_object",):  # the analyses run on the networks they name only
        assert not (study / "trials" / f"{pair}-seed0" / "decode").exists()
        assert not (study / "trials" / f"{pair}-seed0" / "rsa").exists()
    # across seeds: the control's two trials (the pairs' trials have no decoding or RSA metrics)
    decoding = pd.read_parquet(study / "aggregate" / "decoding.parquet").set_index(["task", "layer"])
    assert set(decoding.index) == {(task, layer) for task in ("face", "object", "food") for layer in layers}
    assert (decoding["n_seeds"] == 2).all()
    face = trials[trials["network"] == "face"]
    assert decoding.loc[("face", "fc7"), "mean"] == pytest.approx(face["decode/face/fc7"].mean())
    assert decoding.loc[("object", "conv5_3"), "sd"] == pytest.approx(face["decode/object/conv5_3"].std())
    rsa = pd.read_parquet(study / "aggregate" / "rsa.parquet").set_index("layer")
    assert (rsa["n_seeds"] == 2).all() and rsa.loc["fc7", "mean"] == pytest.approx(face["rsa/fc7"].mean())
    assert rsa.loc["conv5_3", "low"] <= rsa.loc["conv5_3", "mean"] <= rsa.loc["conv5_3", "high"]


def test_across_seeds_is_the_mean_with_a_t_interval():
    seeds = pd.DataFrame(
        {
            "pair": "p",
            "condition": "network",
            "layer": "conv1_1",
            "layer_index": 1,
            "task_a": "a",
            "task_b": "b",
            "seed": [0, 1, 2],
            "si": [0.2, 0.4, 0.9],
        }
    )
    [row] = across_seeds(seeds).itertuples()
    sd = np.std([0.2, 0.4, 0.9], ddof=1)
    assert row.n_seeds == 3 and row.mean_si == pytest.approx(0.5)
    half = 4.302653 * sd / np.sqrt(3)  # t(0.975, 2) = 4.3027
    assert (row.low, row.high) == pytest.approx((0.5 - half, 0.5 + half), rel=1e-5)
    [single] = across_seeds(seeds.iloc[:1]).itertuples()
    assert single.mean_si == pytest.approx(0.2) and np.isnan(single.low) and np.isnan(single.high)


@pytest.mark.parametrize("name", ["paper", "tiny", "demo"])
def test_shipped_study_configs_load(name):
    from specialize.study import trials_of
    from specialize.study_config import load_study

    study = load_study(ROOT / "studies" / f"{name}.yaml", root=ROOT)
    assert len(trials_of(study)) == len(study.networks) * len(study.seeds)
    if name in ("tiny", "demo"):  # laptop studies draw and build their own data, in the study's directory
        assert study.data.synth is not None and study.data_dir == study.out_dir / "data"
    if (
        name == "paper"
    ):  # the paper's scale: 4 pairs (faces as one class too) and 2 controls x 5 seeds; face/object decode
        assert (len(study.pairs), len(study.controls), len(study.seeds)) == (4, 2, 5)
        assert [network for network in study.networks if study.analyses.decoding.runs_on(network)] == [
            "face_object",
            "face",
            "object",
        ]


def test_study_stages_are_their_commands_settings_given_over_their_defaults(tmp_path):
    from analysis.representations.settings import ActivationSettings, DecodingSettings
    from common.typed_config import part_of
    from specialize.study_config import study_from_dict
    from sweeps.settings import SweepSettings

    analyses = {
        "lesion": {"memory_budget": 2**30, "layers": ["conv5_3"], "resources": {"cpus": 2}},
        "decoding": {"enabled": True, "folds": 3, "extraction": {"layers": ["fc6"]}},
    }
    study = study_from_dict(
        {"controls": {"face": {"config": str(ROOT / "configs/tiny_face.yaml")}}, "analyses": analyses}
    )
    lesion = part_of(study.analyses.lesion, SweepSettings)  # every setting of `specialize lesion`, its memory too
    assert lesion == SweepSettings(memory_budget=2**30, layers=("conv5_3",), resources=lesion.resources)
    assert lesion.resources.cpus == 2 and lesion.resources.max_retries == 3  # the rest: Resources' defaults
    decoding = part_of(study.analyses.decoding, DecodingSettings)  # a section given in part keeps decoding's pooling
    assert decoding == DecodingSettings(folds=3, extraction=ActivationSettings(layers=("fc6",), pooling="mean"))
    assert study.analyses.decoding.runs_on("face") and not study.analyses.rsa.runs_on("face")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"pairs": {}, "controls": {}}, "the study has no networks"),
        ({"seeds": [1, 1]}, "distinct seeds"),
        ({"pairs": {"x": {"config": "configs/none.yaml"}}}, "does not exist"),
        ({"resources": {"train": {"gpus": 2}}}, "at most one GPU"),
        ({"analyses": {"lesion": {"rankin": "greedy"}}}, "unknown config key analyses.lesion.rankin"),
        (
            {"analyses": {"lesion": {"ranking": "greedy"}, "segregation": {"fractions": [0.3]}}},
            "lesions up to fraction 0.3 but the greedy ranking chooses 0.2 of each layer",
        ),
        (
            {"analyses": {"decoding": {"enabled": True, "extraction": {"layers": ["conv9_1"]}}}},
            "config key analyses.decoding.extraction.layers has unknown layer 'conv9_1'",
        ),
        ({"analyses": {"lesion": {"memory_budget": 0}}}, "config key analyses.lesion.memory_budget must be at least 1"),
        ({"analyses": {"decoding": {"classifier": "forest"}}}, "analyses.decoding.classifier is 'forest'"),
        ({"analyses": {"rsa": {"enabled": True}}}, "analyses.rsa.stimuli: stimulus list '' is not a file"),
        ({"analyses": {"decoding": {"networks": ["face_objet"]}}}, "analyses.decoding.networks: 'face_objet' is not a"),
        *[
            (
                {"pairs": RESNET_PAIR, "analyses": {"lesion": {"layers": []}, **analysis}},
                f"config key analyses.{key}: network resnet (resnet18) has no layer {layer!r}; choose from conv1, "
                "layer1.0.conv1, layer1.0, layer1.1.conv1,",
            )
            for key, layer, analysis in [
                (
                    "decoding.extraction.layers",
                    "fc7",
                    {"decoding": {"enabled": True, "extraction": {"layers": ["fc7"]}}},
                ),
                (
                    "rsa.extraction.layers",
                    "conv5_3",
                    {"rsa": {"enabled": True, **RSA_INPUTS, "extraction": {"layers": ["all", "conv5_3"]}}},
                ),
                ("visualize.layer", "conv5_3", {"visualize": {"enabled": True, "layer": "conv5_3"}}),
                ("visualize.layer", "output", {"visualize": {"enabled": True, "layer": "output"}}),  # not a unit
                ("lesion.layers", "last_unit", {"lesion": {"layers": ["last_unit"]}}),  # units alone, no keywords
            ]
        ],
        (
            {"aggregate": {"bootstrap": "hierarchial"}},
            "config key aggregate.bootstrap is 'hierarchial'; valid values: none, hierarchical",
        ),
    ],
)
def test_bad_study_configs_are_one_line_errors(tmp_path, capsys, change, message):
    config = study_yaml(tmp_path / "study.yaml", tmp_path / "data", tmp_path / "runs", **change)
    assert main(["study", "--config", str(config)]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error
    assert not (tmp_path / "runs").exists()  # nothing written


def test_seeds_outside_the_study_are_one_line_errors(tmp_path, capsys):
    config = study_yaml(tmp_path / "study.yaml", tmp_path / "data", tmp_path / "runs")
    assert main(["study", "--config", str(config), "--seeds", "7"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--seeds 7 is not among the study's seeds [0, 1]" in error and "\n" not in error


def planted_seeds(network, control, p_values=None) -> pd.DataFrame:
    """Per-seed rows of one pair and layer: the network's index and its random-task control's (and, when given, the
    network's permutation p-value with the mean of its null partitions at 0.05)."""
    frame = pd.DataFrame(
        {
            "pair": "p",
            "layer": "conv5_3",
            "layer_index": 13,
            "task_a": ["a"] * len(network) + ["pseudo1"] * len(control),  # the control's pseudo-tasks stand for a, b
            "task_b": ["b"] * len(network) + ["pseudo2"] * len(control),
            "seed": np.tile(range(len(network)), 2),
            "condition": ["network"] * len(network) + ["random tasks"] * len(control),
            "si": [*network, *control],
        }
    )
    if p_values is not None:
        frame["p_value"] = [*p_values, *[np.nan] * len(control)]
        frame["null_mean"] = [*[0.05] * len(network), *[np.nan] * len(control)]
    return frame


def test_paired_tests_of_planted_seeds_match_the_hand_worked_numbers():
    from analysis.seeds import paired_tests

    [row] = paired_tests(planted_seeds([0.5, 0.6, 0.7], [0.1, 0.1, 0.1])).itertuples()
    # differences 0.4, 0.5, 0.6 against the random-task control: mean 0.5, SD 0.1, t(0.975, 2) = 4.302653
    assert row.null_source == "random tasks" and row.mean_null == pytest.approx(0.1)
    assert row.mean_difference == pytest.approx(0.5)
    assert (row.low, row.high) == pytest.approx((0.5 - 0.248414, 0.5 + 0.248414), abs=1e-6)
    assert row.p_sign_flip == pytest.approx(1 / 8)  # 3 seeds, all above: the least p, 2^-3
    assert np.isnan(row.p_fisher)  # no permutation p-values
    [row] = paired_tests(planted_seeds([0.5, 0.6, 0.7], [0.1, 0.1, 0.1], [0.01, 0.02, 0.05])).itertuples()
    # the null partitions' mean (0.05) wins over the control: differences 0.45, 0.55, 0.65
    assert row.null_source == "null partitions" and row.mean_difference == pytest.approx(0.55)
    # Fisher: exp(-X/2) (1 + X/2 + (X/2)^2 / 2) with X/2 = -ln(0.01 x 0.02 x 0.05) = ln(1e5): 7.8787e-4
    assert row.p_fisher == pytest.approx(1e-5 * (1 + np.log(1e5) + np.log(1e5) ** 2 / 2))
    assert row.p_stouffer == pytest.approx(2.52e-4, rel=0.01)


def test_intact_table_reads_each_trials_test_accuracy(tmp_path):
    from analysis.seeds import intact_table

    tested = tmp_path / "face_object-seed0"
    (tested / "accuracy").mkdir(parents=True)
    pd.DataFrame(
        {
            "task": ["face", "face", "object", "object"],
            "scope": ["all_outputs", "task_outputs"] * 2,
            "accuracy": [0.6, 0.7, 0.4, 0.5],
            "accuracy_low": [0.5, 0.6, 0.3, 0.4],
            "accuracy_high": [0.7, 0.8, 0.5, 0.6],
        }
    ).to_parquet(tested / "accuracy" / "accuracy.parquet")
    trials = pd.DataFrame(
        [
            {"network": "face_object", "pair": True, "seed": 0, "tasks": ["face", "object"], "directory": str(tested)},
            {"network": "face", "pair": False, "seed": 0, "tasks": ["face"], "directory": str(tmp_path / "old")},
        ]
    ).assign(**{"val/face/top1": [0.9, 0.8]})
    table = intact_table(trials).set_index(["network", "task"])
    assert table.loc[("face_object", "face"), ["split", "top1", "low", "high"]].tolist() == ["test", 0.6, 0.5, 0.7]
    assert table.loc[("face_object", "object"), "top1"] == 0.4  # over all outputs, not within the task's
    old = table.loc[("face", "face")]  # a trial finished before test accuracy was measured
    assert old["split"] == "validation" and old["top1"] == 0.8 and np.isnan(old["low"])
