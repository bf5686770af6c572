"""`specialize lesion` end to end on a built tiny data directory, and its one-line errors on bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers_train import session_untrained_checkpoint

from data_pipeline.sample import sample_images
from lightning_modules.checkpoint import load_model
from lightning_modules.vgg import filters_per_layer
from specialize.cli import main
from sweeps.engine import lesion_sweep


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A built face+object data directory and a checkpoint of an (untrained) tiny model on it."""
    return session_untrained_checkpoint(tmp_path_factory, train_per_class=6, test_per_class=2)


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["lesion", *map(str, args)])
    return code, capsys.readouterr().err.strip()


def test_bad_inputs_fail_with_one_line(trained, tmp_path, capsys):
    data, checkpoint = trained
    code, err = run_cli(capsys, "--checkpoint", tmp_path / "missing.ckpt", "--data", data, "--out", tmp_path / "o")
    assert code == 2 and "missing.ckpt does not exist" in err and len(err.splitlines()) == 1

    face_only = tmp_path / "face_only"
    shutil.copytree(data, face_only)
    manifest = json.loads((face_only / "manifest.json").read_text())
    del manifest["tasks"]["object"]
    (face_only / "manifest.json").write_text(json.dumps(manifest))
    code, err = run_cli(capsys, "--checkpoint", checkpoint, "--data", face_only, "--out", tmp_path / "o")
    assert code == 2 and "lacks task 'object'" in err and len(err.splitlines()) == 1

    code, err = run_cli(
        capsys, "--checkpoint", checkpoint, "--data", data, "--out", tmp_path / "o", "--images-per-task", 10_000
    )
    assert code == 2 and "--images-per-task 10000" in err and "at most 24" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_cli_sweep_writes_tables_and_manifest(trained, ray_cluster, tmp_path, capsys):
    data, checkpoint = trained
    out = tmp_path / "sweep"
    code, err = run_cli(
        capsys,
        "--checkpoint",
        checkpoint,
        "--data",
        data,
        "--out",
        out,
        "--images-per-task",
        12,
        "--layers",
        "conv1_2",
        "conv5_3",
        "--no-progress",
    )
    assert code == 0, err
    filter_losses = pd.read_parquet(out / "filter_losses.parquet")
    ranking = pd.read_parquet(out / "ranking.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert manifest["checkpoint"] == str(checkpoint.resolve()) and manifest["data"] == str(data.resolve())
    assert manifest["images_per_task"] == 12 and manifest["seeds"] == {"images": 0} and manifest["versions"]["torch"]
    assert config["settings"]["layers"] == ["conv1_2", "conv5_3"] and config["identity"]["images_per_task"] == 12

    loaded = load_model(checkpoint)
    images = {
        task: sample_images(data, task, "train", 12, 0, 32, label_space=loaded.label_space)
        for task in loaded.label_space.tasks
    }
    expected = lesion_sweep(loaded.model, images, layers=["conv1_2", "conv5_3"])
    assert len(filter_losses) == len(expected) == 2 * (4 + 32)
    assert abs(filter_losses.loss - expected.loss).max() < 1e-5
    assert len(ranking) == len(filter_losses) and set(ranking.task) == {"face", "object"}
    # one-shot ranking: per layer and task, the filters by their own loss, highest first, each rank once
    losses = filter_losses[["layer", "task", "filter", "loss"]]
    ranked = ranking.drop(columns=["loss"], errors="ignore").merge(losses, on=["layer", "task", "filter"])
    ranked = ranked.sort_values(["layer", "task", "rank"])
    for (layer, task), group in ranked.groupby(["layer", "task"]):
        assert list(group["rank"]) == list(range(len(group))) == list(range(filters_per_layer(loaded.model)[layer]))
        assert group["loss"].is_monotonic_decreasing, (layer, task)
        direct = expected[(expected.layer == layer) & (expected.task == task)].set_index("filter").loss
        assert direct[group["filter"].iat[0]] > direct.max() - 1e-5  # the top filter is the direct sweep's top


def test_rerun_into_a_directory_of_another_sweep_is_refused(tmp_path):
    from dataclasses import replace

    from common.errors import UserError
    from common.io import write_json
    from sweeps.distributed import sweep_stage, with_recorded_budget
    from sweeps.settings import SweepSettings

    stored = SweepSettings(images_per_task=12, filters_per_task=8, memory_budget=10**9)
    write_json(
        tmp_path / "config.json",
        {"identity": {"data": "d", **stored.result_fields()}, "settings": {"memory_budget": 10**9}},
    )
    resumed = with_recorded_budget(tmp_path, SweepSettings(images_per_task=12, filters_per_task=8))
    assert resumed.memory_budget == 10**9  # a budget left to default is the stored one
    sweep_stage(tmp_path, {"data": "d"}, resumed)  # the same sweep resumes
    with pytest.raises(UserError, match="another images_per_task \\(12, now 13\\)"):
        sweep_stage(tmp_path, {"data": "d"}, replace(resumed, images_per_task=13))
    with pytest.raises(UserError, match="another filters_per_task \\(8, now 4\\)"):
        sweep_stage(tmp_path, {"data": "d"}, replace(resumed, filters_per_task=4))
    # a greedy sweep is also identified by its target, the first differing key named
    with pytest.raises(UserError, match="another greedy_target \\(None, now 0.2\\)"):
        sweep_stage(tmp_path, {"data": "d"}, replace(resumed, ranking="greedy"))
