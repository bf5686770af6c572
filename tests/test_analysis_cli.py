"""`specialize segregation` end to end through Ray on a built tiny data directory: outputs, resume, the
random-task control (one-shot and greedy rankings equal to a direct sweep of the pseudo-tasks), `specialize figures`,
and one-line errors; the streamed evaluation of slices of the test .beton files."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers_train import untrained_checkpoint, wandb_history, wandb_run

from analysis.segregation.lesion_eval import INTACT_UNIT, Analysis, TensorSource, Unit, evaluate_analyses, image_slices
from analysis.segregation.run import beton_sources
from analysis.segregation.task_groups import random_grouping, regroup
from specialize.cli import main

LAYERS = ("conv1_1", "conv5_3")
TASKS = ("face", "object")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """A built face+object data directory (3 test images per class) and a tiny untrained model on it."""
    return untrained_checkpoint(tmp_path_factory.mktemp("segregation_cli"), train_per_class=6, test_per_class=3)


@pytest.fixture(scope="module")
def sweep(checkpoint, ray_cluster) -> tuple[Path, Path]:
    """The data directory and a two-layer lesion sweep of the tiny model on it (on the module's one Ray)."""
    data, checkpoint = checkpoint
    out = data.parent / "sweep"
    assert (
        main(
            [
                "lesion",
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(data),
                "--out",
                str(out),
                "--images-per-task",
                "8",
                "--layers",
                *LAYERS,
                "--no-progress",
            ]
        )
        == 0
    )
    return data, out


@pytest.fixture(scope="module")
def network_analysis(sweep, tmp_path_factory) -> tuple[Path, list[str], str]:
    """The sweep's segregation analysis with the command's default null (20 partitions) at fractions 0, 0.2 and 0.5:
    its directory, its arguments and what it printed."""
    _, sweep_dir = sweep
    out = tmp_path_factory.mktemp("network") / "seg"
    args = ["segregation", "--sweep", str(sweep_dir), "--out", str(out), "--fractions", "0,0.5", "--bootstraps", "100"]
    args += ["--images-per-unit", "5"]  # 12 test images per task: slices of 5, 5 and 2, six units
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*args, "--wandb-project", "specialize-tests"]) == 0  # W&B offline by default
    return out, args, printed.getvalue()


@pytest.mark.slow
def test_segregation_writes_tables_summary_figures_and_resumes(network_analysis, capsys):
    out, args, printed = network_analysis
    assert "conv5_3" in printed and "null: 20 random partitions (sizes)" in printed and "  p 0." in printed
    predictions = pd.read_parquet(out / "predictions.parquet")
    for column in (
        "layer",
        "lesioned_task",
        "fraction",
        "eval_task",
        "image",
        "class",
        "label",
        "prediction",
        "correct",
    ):
        assert column in predictions
    # intact + 2 layers x 2 lesioned tasks x 3 fractions, each on 4 classes x 3 test images of both tasks
    assert len(predictions) == (1 + 2 * 2 * 3) * 2 * 12
    # the top sets' checks: split-half reliability from the sweep's per-class table (4 classes: halves of 2), overlap
    reliability = pd.read_parquet(out / "reliability.parquet")
    assert set(zip(reliability.layer, reliability.task)) == {(layer, task) for layer in LAYERS for task in TASKS}
    assert set(reliability["classes_per_half"]) == {2} and reliability["jaccard"].between(0, 1).all()
    assert set(pd.read_parquet(out / "overlap.parquet")["layer"]) == set(LAYERS)
    intact = predictions[predictions.layer == "intact"]
    lesioned_nothing = predictions[predictions.fraction == 0.0].query("layer != 'intact'")
    # a fraction of 0 lesions nothing: the same predictions as the intact network
    merged = lesioned_nothing.merge(intact, on=["eval_task", "image"], suffixes=("", "_intact"))
    assert (merged["prediction"] == merged["prediction_intact"]).all()
    segregation = pd.read_parquet(out / "segregation.parquet")
    assert set(segregation.fraction) == {0.0, 0.2, 0.5} and set(segregation.layer) == set(LAYERS)
    assert np.allclose(segregation.query("fraction == 0.0")["si"], 0.0)
    # at a fraction that lesions filters, the index (stored as float32) is the definition's, computed here from the
    # predictions
    accuracy = predictions.groupby(["layer", "lesioned_task", "fraction", "eval_task"])["correct"].mean()

    def drop(layer: str, evaluated: str, lesioned: str) -> float:
        return 1 - accuracy[(layer, lesioned, 0.5, evaluated)] / accuracy[("intact", "none", 0.0, evaluated)]

    headline = segregation.query("fraction == 0.5 and scope == 'all_outputs'").set_index("layer")["si"]
    by_hand = {
        layer: 0.5
        * (
            drop(layer, "face", "face")
            - drop(layer, "object", "face")
            + drop(layer, "object", "object")
            - drop(layer, "face", "object")
        )
        for layer in LAYERS
    }
    assert headline.to_dict() == pytest.approx(by_hand, abs=1e-6) and any(abs(v) > 0.01 for v in by_hand.values())
    # the permutation null (the command's default 20 partitions, in the same pass): band and p-value per row
    null = pd.read_parquet(out / "null.parquet")
    assert sorted(set(null["partition"])) == list(range(1, 21)) and set(null["task_a"]) == {"face"}
    for row in segregation.itertuples():  # each row's p-value is the formula's on its own null indices
        drawn = null.query("layer == @row.layer and fraction == @row.fraction and scope == @row.scope")["si"]
        assert len(drawn) == 20 and row.n_null == drawn.notna().sum() > 0  # untrained: a pseudo-task may score 0
        assert row.p_value == pytest.approx((1 + (drawn >= row.si).sum()) / (1 + row.n_null))
        assert row.null_low <= row.null_mean <= row.null_high
    # the fraction curve: the index at 0, 0.2 and 0.5 per layer and its area, with the area's null
    curve = pd.read_parquet(out / "fraction_curve.parquet")
    assert len(curve) == 2 * 2 * 3 and set(curve["fraction"]) == {0.0, 0.2, 0.5}
    assert {"area", "area_low", "area_high", "area_p_value", "area_null_mean"} <= set(curve.columns)
    assert not (out / "null_greedy").exists()  # one-shot: the partitions are ranked from the per-class table
    summary = json.loads((out / "summary.json").read_text())
    assert [row["layer"] for row in summary["segregation_index"]["all_outputs"]["face+object"]] == list(LAYERS)
    assert all("p_value" in row for row in summary["segregation_index"]["all_outputs"]["face+object"])
    assert [row["layer"] for row in summary["fraction_curve_area"]["all_outputs"]["face+object"]] == list(LAYERS)
    for name in ("segregation_by_layer", "normalised_performance_conv5_3", "drop_heatmap"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 0 and (out / "figures" / f"{name}.svg").exists()
    assert json.loads((out / "manifest.json").read_text())["kind"] == "segregation"
    [logged] = wandb_history(out)  # the offline W&B run holds every figure and table
    for name in ("segregation_by_layer", "normalised_performance", "drop_heatmap"):
        assert logged[f"figures/{name}._type"] == "image-file"
    logged_summary = wandb_run(out)["summary"]  # the index's p-value and null beside it, as W&B summaries
    [conv1, conv5] = summary["segregation_index"]["all_outputs"]["face+object"]
    assert logged_summary["p_value/face+object/conv5_3"] == pytest.approx(conv5["p_value"])
    assert logged_summary["null_mean/face+object/conv1_1"] == pytest.approx(conv1["null_mean"])
    for name in ("accuracy", "drops", "segregation", "null", "fraction_curve"):
        assert logged[f"tables/{name}.nrows"] == len(pd.read_parquet(out / f"{name}.parquet"))

    # a rerun reuses every finished unit and gives the same tables
    stamps = {path: path.stat().st_mtime_ns for path in (out / "units").glob("*.parquet")}
    assert sorted(path.name for path in stamps) == [
        f"{task}_{start:08d}.parquet" for task in ("face", "object") for start in (0, 5, 10)
    ]
    assert main(args) == 0
    assert {path: path.stat().st_mtime_ns for path in (out / "units").glob("*.parquet")} == stamps
    pd.testing.assert_frame_equal(pd.read_parquet(out / "segregation.parquet"), segregation)

    # another analysis in the same directory is refused in one line, naming the setting that differs
    assert main([*args[:-6], "--fractions", "0.3", "--bootstraps", "100"]) == 2
    assert "another fractions" in capsys.readouterr().err
    assert main([*args, "--null-partitions", "5"]) == 2
    assert "another null_partitions (20, now 5)" in capsys.readouterr().err
    assert main([*args, "--partition", "halves"]) == 2
    assert "another partition ('sizes', now 'halves')" in capsys.readouterr().err


@pytest.mark.slow
def test_random_task_control_ranks_and_analyses_pseudo_tasks(sweep, network_analysis, tmp_path):
    _, sweep_dir = sweep
    out = tmp_path / "random"
    random_control(sweep_dir, out, bootstraps=50)
    # the control is partition 1 of the network's null: the same index at every layer and scope (fraction 0.2)
    control = pd.read_parquet(out / "segregation.parquet")
    null = pd.read_parquet(network_analysis[0] / "null.parquet").query("partition == 1 and fraction == 0.2")
    keys = ["layer", "scope"]
    assert len(control) == len(null) == 2 * 2 and set(control.task_a) == {"pseudo1"} and set(null.task_a) == {"face"}
    merged = control.merge(null, on=keys, suffixes=("", "_null"), validate="one_to_one")
    assert len(merged) == 4 and merged["si"].notna().any()
    np.testing.assert_array_equal(merged["si"], merged["si_null"])
    tasks = pd.read_parquet(out / "tasks.parquet")
    # the pseudo-tasks partition all 8 classes, 4 each like face and object, and mix the originals
    assert sorted(tasks.label) == list(range(8))
    assert tasks.groupby("task").size().to_dict() == {"pseudo1": 4, "pseudo2": 4}
    assert tasks.groupby("task")["original_task"].nunique().max() == 2
    ranking = pd.read_parquet(out / "ranking.parquet")
    assert set(ranking.task) == {"pseudo1", "pseudo2"} and set(ranking.layer) == set(LAYERS)
    pd.testing.assert_frame_equal(ranking, direct_pseudo_sweep(sweep_dir, out.parent / "direct"))
    assert not (out / "pseudo_greedy").exists()  # one-shot: no second sweep
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert set(predictions.eval_task) == {"pseudo1", "pseudo2"}
    members = tasks.groupby("task")["label"].apply(set).to_dict()
    assert all(label in members[task] for task, label in zip(predictions.eval_task, predictions.label))
    assert len(predictions[predictions.layer == "intact"]) == 24  # every test image once


def random_control(sweep_dir: Path, out: Path, bootstraps: int) -> None:
    """`specialize segregation --random-tasks` (bootstrap seed 4) of a sweep into `out`."""
    args = ["segregation", "--sweep", str(sweep_dir), "--out", str(out), "--random-tasks", "--seed", "4"]
    assert main([*args, "--bootstraps", str(bootstraps)]) == 0


def direct_pseudo_sweep(sweep_dir: Path, out: Path) -> pd.DataFrame:
    """The ranking of a second sweep, as the control ran one before the per-class table: the sweep's training images
    regrouped into the control's pseudo-tasks (partition 1 of the null, seeded by the network's seed and 1), swept by
    the sweep's method and settings."""
    from analysis.segregation.run import read_sweep
    from common.ray_runner import Resources
    from lightning_modules.checkpoint import load_model
    from sweeps.distributed import distributed_sweep, training_images

    recorded = read_sweep(sweep_dir)
    loaded = load_model(recorded.manifest["checkpoint"])
    settings = recorded.settings(Resources())
    images = training_images(loaded, recorded.manifest["data"], settings.images_per_task, settings.seed)
    grouping = random_grouping(loaded.label_space, (loaded.config.seed, 1))
    _, ranking = distributed_sweep(loaded.model, regroup(images, grouping), out, settings, progress=False)
    return ranking


@pytest.mark.slow
def test_greedy_sweeps_control_runs_greedy_rounds_of_its_own(checkpoint, ray_cluster, tmp_path):
    """A greedy sweep's control: round 0 from the per-class table, later rounds (conv3_1: 16 filters, 3 rounds) on the
    regrouped images; the ranking of a direct greedy sweep of the pseudo-tasks."""
    data, path = checkpoint
    sweep_dir = tmp_path / "greedy_sweep"
    sweep_args = ["lesion", "--checkpoint", str(path), "--data", str(data), "--out", str(sweep_dir)]
    assert (
        main([*sweep_args, "--images-per-task", "8", "--layers", "conv3_1", "--ranking", "greedy", "--no-progress"])
        == 0
    )
    out = tmp_path / "random"
    random_control(sweep_dir, out, bootstraps=20)
    ranking = pd.read_parquet(out / "ranking.parquet")
    pd.testing.assert_frame_equal(ranking, direct_pseudo_sweep(sweep_dir, tmp_path / "direct"))
    rounds = sorted(path.relative_to(out) for path in (out / "pseudo_greedy" / "chunks" / "greedy").rglob("*.parquet"))
    assert rounds and not (out / "pseudo_greedy" / "chunks" / "oneshot").exists()  # round 0 came from the table
    assert {path.parts[4] for path in rounds} == {"pseudo1", "pseudo2"}  # rounds of both pseudo-tasks ran
    # the network's null under greedy: each partition runs greedy rounds of its own (null_greedy/<i>/), partition 1
    # the control's, so its index is the control's
    network = tmp_path / "network"
    assert main(["segregation", "--sweep", str(sweep_dir), "--out", str(network), "--null-partitions", "2"]) == 0
    for partition in ("1", "2"):
        assert any((network / "null_greedy" / partition / "chunks" / "greedy").rglob("*.parquet"))
    null = pd.read_parquet(network / "null.parquet")
    assert sorted(set(null["partition"])) == [1, 2] and set(null["layer"]) == {"conv3_1"}
    control = pd.read_parquet(out / "segregation.parquet")
    merged = control.merge(null.query("partition == 1"), on=["layer", "fraction", "scope"], suffixes=("", "_null"))
    assert len(merged) == len(control) == 2  # conv3_1 in both scopes
    np.testing.assert_array_equal(merged["si"], merged["si_null"])
    assert pd.read_parquet(network / "segregation.parquet")["n_null"].max() <= 2


def test_missing_sweep_is_one_line_error(tmp_path, capsys):
    assert main(["segregation", "--sweep", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a finished lesion sweep" in err and len(err.splitlines()) == 1
    assert main(["segregation", "--sweep", str(tmp_path), "--out", str(tmp_path / "o"), "--fractions", "a,b"]) == 2
    err = capsys.readouterr().err.strip()
    assert "argument --fractions: expected comma-separated numbers" in err and len(err.splitlines()) == 1


def finished_analysis(path: Path, headline: float, base: float) -> Path:
    """A finished segregation analysis as `specialize figures` reads it (segregation.parquet, summary.json), with
    its index different at every layer, fraction and scope: base + layer/100 + fraction + 0.3 in task_outputs."""
    path.mkdir()
    rows = [
        {
            "layer": layer,
            "layer_index": index,
            "fraction": fraction,
            "scope": scope,
            "task_a": "face",
            "task_b": "object",
            "si": base + index / 100 + fraction + (0.3 if scope == "task_outputs" else 0.0),
        }
        for index, layer in [(13, "conv5_3"), (1, "conv1_1"), (7, "conv3_3")]  # not in layer order
        for fraction in (0.2, 0.5)
        for scope in ("all_outputs", "task_outputs")
    ]
    table = pd.DataFrame(rows)
    table["si_low"], table["si_high"] = table["si"] - 0.05, table["si"] + 0.07
    table.to_parquet(path / "segregation.parquet")
    (path / "summary.json").write_text(json.dumps({"fraction": headline}))
    return path


def drawn_curves(monkeypatch) -> list[dict]:
    """Record, for every figure `analysis.figures` saves, each labelled line's points and its CI band."""
    from analysis import figures

    drawn, save = [], figures.save_figure

    def record(figure, stem):
        axis = figure.axes[0]
        lines = [line for line in axis.get_lines() if not line.get_label().startswith("_")]
        curves = {}
        for line, band in zip(lines, axis.collections):
            vertices = {tuple(np.round(v, 6)) for v in band.get_paths()[0].vertices}
            curves[line.get_label()] = (line.get_xdata().tolist(), np.round(line.get_ydata(), 6).tolist(), vertices)
        drawn.append({"curves": curves, "legend": [text.get_text() for text in axis.get_legend().get_texts()]})
        return save(figure, stem)

    monkeypatch.setattr(figures, "save_figure", record)
    return drawn


def test_figures_draw_each_analysis_as_its_own_labelled_curve(tmp_path, monkeypatch, capsys):
    network = finished_analysis(tmp_path / "network", headline=0.2, base=0.1)
    control = finished_analysis(tmp_path / "control", headline=0.5, base=-0.4)
    drawn = drawn_curves(monkeypatch)

    def expected(base: float, fraction: float, scope_offset: float = 0.0):
        si = [round(base + index / 100 + fraction + scope_offset, 6) for index in (1, 7, 13)]
        band = {(x, round(y - 0.05, 6)) for x, y in zip((1, 7, 13), si)} | {
            (x, round(y + 0.07, 6)) for x, y in zip((1, 7, 13), si)
        }
        return [1, 7, 13], si, band

    # default: each analysis at its own headline fraction, scope all_outputs
    assert main(["figures", f"{network}=network", f"{control}=control", "--out", str(tmp_path / "fig")]) == 0
    [figure] = drawn
    assert figure["legend"] == ["network: face vs object", "control: face vs object"]
    for label, (base, fraction) in {
        "network: face vs object": (0.1, 0.2),
        "control: face vs object": (-0.4, 0.5),
    }.items():
        xs, ys, band = figure["curves"][label]
        exp_x, exp_y, exp_band = expected(base, fraction)
        assert (xs, ys) == (exp_x, exp_y), label
        assert exp_band <= band, label
    svg = (tmp_path / "fig.svg").read_text()
    assert "network: face vs object" in svg and "control: face vs object" in svg and (tmp_path / "fig.png").is_file()

    # one fraction and the other scope for both
    assert (
        main(
            [
                "figures",
                str(network),
                f"{control}=control",
                "--out",
                str(tmp_path / "fig2"),
                "--fraction",
                "0.5",
                "--scope",
                "task_outputs",
            ]
        )
        == 0
    )
    curves = drawn[1]["curves"]
    assert list(curves) == ["network: face vs object", "control: face vs object"]  # a bare DIR is labelled by its name
    assert curves["network: face vs object"][:2] == tuple(expected(0.1, 0.5, 0.3)[:2])
    assert curves["control: face vs object"][:2] == tuple(expected(-0.4, 0.5, 0.3)[:2])

    # a fraction an analysis does not have is one clear line
    assert main(["figures", str(network), "--out", str(tmp_path / "fig3"), "--fraction", "0.3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no segregation index at fraction 0.3" in err and len(err.splitlines()) == 1


def test_slices_of_the_test_betons_stream_in_batches_like_an_in_memory_evaluation(checkpoint, monkeypatch):
    """The units' slices of both real tasks' test files, for pseudo-tasks drawing on both: every streamed batch holds
    at most --batch-size images, no whole split is loaded, each test image is read once for all conditions, and the
    predictions equal those of the whole test sets in memory."""
    from data_pipeline import sample
    from lightning_modules.checkpoint import load_model

    data, path = checkpoint
    loaded = load_model(path)
    grouping, batch_size = random_grouping(loaded.label_space, seed=4), 5
    resolution = loaded.config.data.resolution
    whole = [
        TensorSource(*sample.sample_images(data, task, "test", None, 0, resolution, label_space=loaded.label_space))
        for task in loaded.label_space.tasks
    ]
    plan = {
        INTACT_UNIT: {0.0: []},
        Unit("conv1_1", "pseudo1"): {0.0: [], 0.5: [0, 1]},
        Unit("conv5_3", "pseudo2"): {0.5: [3, 4, 5]},
    }
    analyses = [Analysis(grouping, plan)]
    [expected] = evaluate_analyses(loaded.model, whole, analyses, loaded.label_space, batch_size)

    streamed_sizes = []

    def stream_batches(*args, **kwargs):
        for images, labels in real_stream(*args, **kwargs):
            streamed_sizes.append(len(labels))
            yield images, labels

    real_stream = sample.stream_batches
    monkeypatch.setattr(sample, "stream_batches", stream_batches)
    monkeypatch.setattr(sample, "sample_images", lambda *args, **kwargs: pytest.fail("a whole split was loaded"))
    slices = image_slices(beton_sources(loaded, str(data)), images_per_unit=7)
    assert list(slices) == ["face_00000000", "face_00000007", "object_00000000", "object_00000007"]
    [actual] = evaluate_analyses(loaded.model, list(slices.values()), analyses, loaded.label_space, batch_size)

    pd.testing.assert_frame_equal(actual, expected)
    assert len(actual) == 4 * 24 and max(streamed_sizes) == batch_size
    assert sum(streamed_sizes) == 2 * 12  # every test image of both files, once for all conditions
    assert set(actual["eval_task"]) == {"pseudo1", "pseudo2"}


def test_drop_heatmap_of_undefined_drops_is_drawn_blank(tmp_path):
    """A task the intact network never gets right leaves every drop undefined (NaN): the heat map still draws."""
    from analysis.figures import plot_drop_heatmap

    drops = pd.DataFrame(
        [
            {"eval_task": x, "lesioned_task": y, "layer": f"layer{i}", "layer_index": i, "drop": np.nan}
            for x in ("face", "object")
            for y in ("face", "object")
            for i in (1, 2)
        ]
    )
    paths = plot_drop_heatmap(drops, tmp_path / "heatmap")
    assert [path.suffix for path in paths] == [".png", ".svg"] and all(path.stat().st_size > 0 for path in paths)


def test_data_with_other_classes_than_the_checkpoints_is_refused_in_one_line(checkpoint, tmp_path, capsys):
    from common.io import file_sha256, read_json, write_json

    data, model = checkpoint
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    write_json(sweep_dir / "manifest.json", {"checkpoint": str(model), "checkpoint_sha256": file_sha256(model)})
    write_json(sweep_dir / "config.json", {})
    pd.DataFrame({"layer": ["conv1_1"], "task": ["face"], "rank": [0], "filter": [0]}).to_parquet(
        sweep_dir / "ranking.parquet"
    )
    other = tmp_path / "other_data"  # a rebuilt directory whose face classes come in another order
    other.mkdir()
    manifest = read_json(data / "manifest.json")
    manifest["tasks"]["face"]["classes"] = manifest["tasks"]["face"]["classes"][::-1]
    write_json(other / "manifest.json", manifest)
    out = tmp_path / "seg"
    assert main(["segregation", "--sweep", str(sweep_dir), "--data", str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "task 'face'" in err and "other classes than the model was trained on" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_fractions_past_a_greedy_sweeps_target_are_refused(tmp_path):
    from analysis.segregation.run import Sweep, check_greedy_reach
    from analysis.segregation.settings import SegregationSettings
    from common.errors import UserError

    ranking = pd.DataFrame({"layer": "conv1_1", "task": "face", "rank": range(64), "filter": range(64)})
    greedy = Sweep(tmp_path, {"ranking": "greedy", "greedy_target": 0.2}, {}, ranking)
    check_greedy_reach(greedy, SegregationSettings(fraction=0.2, fractions=(0.1,)))  # 13 of 64: chosen greedily
    with pytest.raises(UserError, match=r"fraction 0.3 lesions 19 of conv1_1's 64 filters .* chose 13"):
        check_greedy_reach(greedy, SegregationSettings(fractions=(0.3,)))
    check_greedy_reach(
        Sweep(tmp_path, {"ranking": "greedy", "greedy_target": 0.3}, {}, ranking), SegregationSettings(fractions=(0.3,))
    )
    check_greedy_reach(Sweep(tmp_path, {"ranking": "oneshot"}, {}, ranking), SegregationSettings(fractions=(0.5,)))
