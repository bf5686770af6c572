"""`specialize decode`, `rsa`, `visualize`, `activations` and `data behaviour` end to end through one Ray session on a
built data directory with held-out classes: tables, figures, agreement with in-process computations, resume,
and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers_representation import (
    HELDOUT_CLASSES,
    fake_sweep,
    session_heldout_data,
    stimulus_list,
    untrained_networks,
)
from helpers_train import session_tiny_data
from scipy.stats import spearmanr

from analysis.representations.activations import Activations, forward_layers
from analysis.representations.decoding import decode
from analysis.representations.rsa import noise_ceiling
from analysis.representations.settings import DecodingSettings
from data_pipeline.behaviour import read_behaviour
from data_pipeline.sample import sample_images
from lightning_modules.checkpoint import load_model
from specialize.cli import main

# one local Ray for every command of this module (each command joins it instead of starting its own)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]
WIDTH = 1 / 16


@pytest.fixture(scope="module")
def networks(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """The held-out data and untrained tiny Face, Object and Dual-task networks on it (batch norm, 32 px)."""
    data = session_heldout_data(tmp_path_factory)
    return data, untrained_networks(data, tmp_path_factory.mktemp("networks"), WIDTH, ("face", "object", "dual"))


def checkpoints(paths: dict[str, Path]) -> list[str]:
    return [arg for name, path in paths.items() for arg in ("--checkpoint", f"{name}={path}")]


def test_decode_three_networks_on_both_held_out_sets(networks, tmp_path, capsys):
    data, paths = networks
    out = tmp_path / "decode"
    common = [
        "decode",
        *checkpoints(paths),
        "--data",
        str(data),
        "--layers",
        "conv5_3",
        "fc7",
        "--out",
        str(out),
        "--no-progress",
    ]
    args = [*common, "--folds", "3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = pd.read_parquet(out / "decoding.parquet")
    assert len(summary) == 3 * 2 * 2 and set(summary.network) == {"face", "object", "dual"}
    assert np.allclose(summary.chance, 1 / HELDOUT_CLASSES) and summary.accuracy.between(0, 1).all()
    assert (summary.images == HELDOUT_CLASSES * 6).all() and (summary.folds == 3).all()
    assert "chance 0.333, 3 classes" in printed
    for name in ("decoding", "decoding_by_layer"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 0 and (out / "figures" / f"{name}.svg").exists()
    assert json.loads((out / "manifest.json").read_text())["kind"] == "decoding"

    # the Ray workers stored what the network computes on the held-out split, and decoding it gives the table
    loaded = load_model(paths["dual"])
    images, labels = sample_images(data, "object", "heldout", None, 0, 32)
    with torch.inference_mode():
        fc7 = forward_layers(loaded.model, images, ["fc7"])["fc7"].numpy()
    stored = Activations(out / "activations" / "dual" / "object_heldout")
    np.testing.assert_allclose(stored.layer("fc7"), fc7, rtol=1e-5, atol=1e-5)
    assert stored.images()["label"].tolist() == labels.tolist()
    folds = decode(stored.layer("fc7"), labels.numpy(), DecodingSettings(folds=3))
    table = pd.read_parquet(out / "decoding_folds.parquet").query(
        "network == 'dual' and task == 'object' and layer == 'fc7'"
    )
    assert table["accuracy"].tolist() == folds["accuracy"].tolist()

    # a rerun resumes: nothing is extracted or decoded again
    units = sorted((out / "units").glob("*.parquet")) + sorted((out / "activations").rglob("*.npy"))
    stamps = {path: path.stat().st_mtime_ns for path in units}
    assert len(stamps) == 12 + 6 * 2
    assert main(args) == 0
    assert {path: path.stat().st_mtime_ns for path in units} == stamps
    assert capsys.readouterr().out == printed

    assert main([*common, "--folds", "2"]) == 2
    assert "holds a decoding with another decoding.folds (3, now 2)" in capsys.readouterr().err
    rest = common[1 + len(checkpoints(paths)) :]
    swapped = ["decode", "--checkpoint", f"face={paths['object']}", *checkpoints(paths)[2:], *rest]
    assert main([*swapped, "--folds", "3"]) == 2  # another checkpoint under a finished network's name is refused
    assert "holds a decoding with another networks.face" in capsys.readouterr().err


def test_decode_errors_are_one_line(networks, tmp_path_factory, tmp_path, capsys):
    data, paths = networks
    without = session_tiny_data(tmp_path_factory)  # built without held-out classes
    capsys.readouterr()
    cases = [
        (
            ["--data", str(without)],
            "has no held-out classes for task 'face'; decoding needs classes the networks "
            "never saw: rebuild it with `specialize data build ... --heldout-classes 100`",
        ),
        (["--data", str(data), "--layers", "fc9"], "unknown layer 'fc9'"),
        (["--data", str(data), "--folds", "7"], "has only 6 images for 7 folds; lower --folds to at most 6"),
        (["--data", str(data), "--classifier", "forest"], "--classifier is 'forest'; valid values: logistic, svm"),
    ]
    for index, (extra, message) in enumerate(cases):
        assert main(["decode", *checkpoints(paths), *extra, "--out", str(tmp_path / str(index)), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_rsa_with_synthetic_participants_recovers_the_planted_layer(networks, tmp_path, capsys):
    data, paths = networks
    dual = {"dual": paths["dual"]}
    layers = ["--layers", "conv1_2", "conv3_1", "conv4_3", "fc6"]
    classes = tmp_path / "classes"
    assert (
        main(
            [
                "data",
                "behaviour",
                "--stimuli",
                str(stimulus_list(data, tmp_path / "list.txt")),
                "--out",
                str(classes),
                "--participants",
                "8",
                "--noise",
                "0.5",
            ]
        )
        == 0
    )
    first = tmp_path / "rsa_classes"
    assert (
        main(
            [
                "rsa",
                *checkpoints(paths),
                "--stimuli",
                str(classes / "stimuli.txt"),
                "--behaviour",
                str(classes),
                *layers,
                "--out",
                str(first),
                "--no-progress",
            ]
        )
        == 0
    )
    summary = pd.read_parquet(first / "rsa.parquet")
    per_participant = pd.read_parquet(first / "rsa_participants.parquet")
    assert len(summary) == 3 * 4 and len(per_participant) == 3 * 4 * 8
    means = per_participant.groupby(["network", "layer"])["correlation"].agg(mean="mean", sem_by_hand="sem")
    merged = summary.join(means, on=["network", "layer"])
    assert np.allclose(merged["correlation"], merged["mean"]) and np.allclose(merged["sem"], merged["sem_by_hand"])
    assert (summary.noise_ceiling_lower <= summary.noise_ceiling_upper).all()
    assert (first / "figures" / "rsa_by_layer.png").stat().st_size > 0
    assert "noise ceiling (spearman)" in capsys.readouterr().out

    planted = tmp_path / "planted"
    assert (
        main(
            [
                "data",
                "behaviour",
                "--stimuli",
                str(classes / "stimuli.txt"),
                "--out",
                str(planted),
                "--plant",
                str(first / "rdms" / "dual" / "conv3_1.npy"),
                "--participants",
                "8",
                "--noise",
                "0.3",
            ]
        )
        == 0
    )
    second = tmp_path / "rsa_planted"
    assert (
        main(
            [
                "rsa",
                *checkpoints(dual),
                "--stimuli",
                str(planted / "stimuli.txt"),
                "--behaviour",
                str(planted),
                *layers,
                "--out",
                str(second),
                "--no-progress",
            ]
        )
        == 0
    )
    assert json.loads((second / "summary.json").read_text())["best_layer"] == {"dual": "conv3_1"}
    assert "dual best layer conv3_1" in capsys.readouterr().out

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "stimuli.txt").write_text((planted / "stimuli.txt").read_text())
    for index, participant in enumerate(np.load(planted / "participant_1.npy")[None].repeat(2, 0)):
        participant[0, 1] = np.nan if index else participant[0, 1]
        np.save(bad / f"p{index}.npy", participant)
    assert (
        main(
            [
                "rsa",
                *checkpoints(dual),
                "--stimuli",
                str(tmp_path / "list.txt"),
                "--behaviour",
                str(bad),
                "--out",
                str(tmp_path / "o1"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "NaN or infinite entries" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text("".join((tmp_path / "list.txt").read_text().splitlines(keepends=True)[:-1]))
    assert (
        main(
            [
                "rsa",
                *checkpoints(dual),
                "--stimuli",
                str(short),
                "--behaviour",
                str(planted),
                "--out",
                str(tmp_path / "o2"),
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "1 behavioural stimuli are missing from the stimulus list" in err and len(err.splitlines()) == 1


def test_rsa_comparison_reaches_the_participant_comparisons_and_the_noise_ceiling(networks, tmp_path):
    data, paths = networks
    behaviour = tmp_path / "behaviour"
    stimuli = stimulus_list(data, tmp_path / "list.txt")
    assert main(["data", "behaviour", "--stimuli", str(stimuli), "--out", str(behaviour), "--participants", "5"]) == 0
    participants = read_behaviour(behaviour).rdms
    i, j = np.triu_indices(participants.shape[1], 1)
    by_hand = {  # each comparison of a model RDM's pairs with a participant's, computed here
        "spearman": lambda model, person: spearmanr(model[i, j], person[i, j]).statistic,
        "corr": lambda model, person: np.corrcoef(model[i, j], person[i, j])[0, 1],
        "tau-a": lambda model, person: (
            np.mean(
                np.sign(model[i, j][:, None] - model[i, j][None]) * np.sign(person[i, j][:, None] - person[i, j][None])
            )
            * len(i)
            / (len(i) - 1)
        ),
    }
    ceilings = {}
    for comparison, compare in by_hand.items():
        out = tmp_path / comparison
        if comparison != "spearman":  # the stimuli's activations, extracted once
            shutil.copytree(tmp_path / "spearman" / "activations", out / "activations")
        args = ["rsa", *checkpoints({"dual": paths["dual"]}), "--stimuli", str(stimuli), "--behaviour", str(behaviour)]
        args += ["--layers", "conv2_1", "fc7", "--comparison", comparison, "--out", str(out), "--no-progress"]
        assert main(args) == 0
        table = pd.read_parquet(out / "rsa_participants.parquet")
        summary = pd.read_parquet(out / "rsa.parquet").set_index("layer")
        for layer in ("conv2_1", "fc7"):
            model = np.load(out / "rdms" / "dual" / f"{layer}.npy")
            expected = [compare(model, person) for person in participants]
            np.testing.assert_allclose(table[table.layer == layer]["correlation"], expected, atol=1e-9)
            ceiling = summary.loc[layer, ["noise_ceiling_lower", "noise_ceiling_upper"]].tolist()
            assert ceiling == pytest.approx(noise_ceiling(participants, comparison, model), abs=1e-12)
        ceilings[comparison] = ceiling
    assert len({tuple(np.round(bounds, 6)) for bounds in ceilings.values()}) == 3  # the three ceilings differ


def test_visualize_chosen_and_top_ranked_filters_with_natural_images(networks, tmp_path, capsys):
    data, paths = networks
    out = tmp_path / "vis"
    base = [
        "visualize",
        "--checkpoint",
        f"dual={paths['dual']}",
        "--layer",
        "conv5_3",
        "--steps",
        "20",
        "--natural-images",
        "2",
        "--no-progress",
    ]
    assert main([*base, "--filters", "1,4", "--out", str(out)]) == 0
    summary = pd.read_parquet(out / "conv5_3_chosen.parquet")
    assert summary["filter"].tolist() == [1, 4]
    natural = pd.read_parquet(out / "conv5_3_chosen_natural.parquet")
    stored = np.concatenate(
        [Activations(out / "activations" / "dual" / f"{task}_test").layer("conv5_3") for task in ("face", "object")]
    )
    for f in (1, 4):
        top = natural[natural["filter"] == f]["activation"].to_numpy()
        np.testing.assert_allclose(top, np.sort(stored[:, f])[::-1][:2], rtol=1e-6)
    np.testing.assert_allclose(summary["natural_max_activation"], stored[:, [1, 4]].max(0), rtol=1e-6)
    assert np.load(out / "conv5_3_chosen_images.npy").shape == (2, 3, 32, 32)
    assert (out / "conv5_3_chosen.png").stat().st_size > 0 and (out / "conv5_3_chosen.svg").exists()

    sweep = fake_sweep(tmp_path / "sweep", paths["dual"], {"face": [7, 2, 9], "object": [3, 0, 5]})
    ranked = tmp_path / "ranked"
    assert (
        main([*base, "--top", "2", "--task", "face", "--task", "object", "--sweep", str(sweep), "--out", str(ranked)])
        == 0
    )
    assert pd.read_parquet(ranked / "conv5_3_face.parquet")["filter"].tolist() == [7, 2]
    assert pd.read_parquet(ranked / "conv5_3_object.parquet")[["filter", "rank"]].values.tolist() == [[3, 0], [0, 1]]
    assert (ranked / "conv5_3_face.png").exists() and (ranked / "conv5_3_object.png").exists()
    capsys.readouterr()

    other = fake_sweep(tmp_path / "other_sweep", paths["face"], {"face": [0, 1]})
    cases = [
        (["--top", "2", "--task", "face", "--sweep", str(other)], "ranks the filters of another checkpoint"),
        (["--filters", "1,x"], "--filters takes comma-separated filter indices"),
        (["--filters", "40"], "conv5_3 has 32 filters (0-31); filter 40 does not exist"),
        (["--top", "4", "--task", "face", "--sweep", str(sweep)], "--top 4 but conv5_3 has 3 ranked filters"),
        (["--filters", "1", "--top", "2"], "choose filters with either --filters"),
    ]
    for index, (extra, message) in enumerate(cases):
        assert main([*base, *extra, "--out", str(tmp_path / f"bad{index}")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_activations_command_for_a_split_and_a_stimulus_list(networks, tmp_path, capsys):
    data, paths = networks
    out = tmp_path / "acts"
    assert (
        main(
            [
                "activations",
                "--checkpoint",
                f"face={paths['face']}",
                "--data",
                str(data),
                "--split",
                "test",
                "--layers",
                "conv1_1",
                "output",
                "--pooling",
                "mean",
                "--dtype",
                "float16",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    for task in ("face", "object"):
        stored = Activations(out / "face" / f"{task}_test")
        assert stored.layer("conv1_1").dtype == np.float16 and stored.layer("conv1_1").shape == (24, 4)
        assert stored.layer("output").shape == (24, 4)
    listed = tmp_path / "stimuli"
    assert (
        main(
            [
                "activations",
                "--checkpoint",
                f"face={paths['face']}",
                "--stimuli",
                str(stimulus_list(data, tmp_path / "list.txt")),
                "--layers",
                "fc7",
                "--out",
                str(listed),
                "--no-progress",
            ]
        )
        == 0
    )
    names = Activations(listed / "face" / "stimuli").images()["name"].tolist()
    assert len(names) == HELDOUT_CLASSES * 4 and names[0].endswith("0000.jpg")
    assert (
        main(
            [
                "activations",
                "--checkpoint",
                f"face={paths['face']}",
                "--data",
                str(data),
                "--layers",
                "fc7",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "holds a activation extraction with another" in capsys.readouterr().err
