"""W&B lineage on offline runs: every stage logs its own run (job type, group, name, config), and the artifacts
it used and made join data -> model -> sweep -> segregation in the run files (read with `wandb leet inspect`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_train import build_tiny_data, tiny_config, wandb_records, wandb_run

from common.io import file_sha256
from common.wandb_runs import WandbTarget, logging_to
from lightning_modules.train import train
from specialize.cli import main

LAYERS = ("conv1_1", "conv5_3")
WANDB = ["--wandb-project", "specialize-tests", "--wandb-group", "lineage", "--wandb-name", "face_object-seed0"]


def artifacts(directory: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """The artifacts the latest offline W&B run under `directory` made and used, by name (W&B's own per-run tables
    left out)."""
    made, used = {}, {}
    for record in wandb_records(directory)[-1]:
        artifact = record.get("artifact")
        if artifact is None or artifact["type"] == "run_table":
            continue
        (used if artifact.get("use_after_commit") else made)[artifact["name"]] = artifact
    return made, used


def entries(artifact: dict) -> dict[str, dict]:
    """An artifact's manifest entries by path."""
    return {entry["path"]: entry for entry in artifact["manifest"]["contents"]}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A tiny data directory, built inside a W&B target: the build logs its run and makes the dataset artifact."""
    with logging_to(WandbTarget("specialize-tests", group="lineage", name="data")):
        return build_tiny_data(tmp_path_factory.mktemp("lineage"), train_per_class=8, test_per_class=3, val_per_class=2)


@pytest.mark.slow
def test_every_stage_logs_its_run_and_lineage_joins_data_model_sweep_segregation(data, ray_cluster, tmp_path):
    run_dir = train(
        tiny_config(data, tmp_path / "runs", ["trainer.epochs=1", "data.batch_size=8", "wandb.upload_checkpoints=true"])
    )
    checkpoint = run_dir / "checkpoints" / "best.ckpt"
    sweep, segregation, activations = tmp_path / "lesion", tmp_path / "segregation", tmp_path / "activations"
    lesion = ["lesion", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(sweep)]
    assert main([*lesion, "--images-per-task", "8", "--layers", *LAYERS, "--no-progress", *WANDB]) == 0
    assert main(["segregation", "--sweep", str(sweep), "--out", str(segregation), "--bootstraps", "20", *WANDB]) == 0
    extract = ["activations", "--checkpoint", str(checkpoint), "--data", str(data), "--split", "test"]
    assert main([*extract, "--layers", "fc7", "--out", str(activations), "--no-progress", *WANDB]) == 0

    # each stage is its own run: job type = the stage, the group and name given, config.json as its config
    for directory, job_type in ((sweep, "lesion"), (segregation, "segregation"), (activations, "activations")):
        run = wandb_run(directory)
        assert (run["job_type"], run["group"], run["name"]) == (job_type, "lineage", "face_object-seed0")
        assert "identity" in run["config"]
    assert wandb_run(data)["job_type"] == "data"
    assert {"intact/face/accuracy", "intact/object/loss"} <= set(wandb_run(sweep)["summary"])
    assert {f"si/face+object/{layer}" for layer in LAYERS} <= set(wandb_run(segregation)["summary"])

    data_made, _ = artifacts(data)
    train_made, train_used = artifacts(run_dir)
    sweep_made, sweep_used = artifacts(sweep)
    segregation_made, segregation_used = artifacts(segregation)
    _, activations_used = artifacts(activations)
    # data: the manifest by reference, named by its hash
    [dataset] = data_made.values()
    manifest_sha = file_sha256(data / "manifest.json")
    assert dataset["name"] == f"dataset-{manifest_sha[:12]}" and dataset["type"] == "dataset"
    assert entries(dataset)["manifest.json"]["ref"] == (data / "manifest.json").resolve().as_uri()
    # data -> model: training used the dataset and made each checkpoint (uploaded here: wandb.upload_checkpoints)
    assert set(train_used) == {dataset["name"]} and train_used[dataset["name"]]["digest"] == dataset["digest"]
    best_sha = file_sha256(checkpoint)
    model = train_made[f"model-{best_sha[:12]}"]
    assert model["type"] == "model" and json.loads(model["metadata"])["sha256"] == best_sha
    assert not entries(model)["best.ckpt"].get("ref") and "best" in model["aliases"]
    last = f"model-{file_sha256(run_dir / 'checkpoints' / 'last.ckpt')[:12]}"
    assert set(train_made) == {model["name"], last}
    # model -> sweep: the sweep used the checkpoint (by reference: the same artifact, digest for digest) and data
    assert set(sweep_used) == {model["name"], dataset["name"]}
    assert sweep_used[model["name"]]["digest"] == model["digest"]
    assert entries(sweep_used[model["name"]])["best.ckpt"]["ref"] == checkpoint.resolve().as_uri()
    [sweep_artifact] = sweep_made.values()
    assert sweep_artifact["name"] == f"sweep-{file_sha256(sweep / 'ranking.parquet')[:12]}"
    assert set(entries(sweep_artifact)) == {"ranking.parquet", "filter_losses.parquet"}
    # sweep -> segregation
    assert set(segregation_used) == {sweep_artifact["name"], model["name"]}
    assert segregation_used[sweep_artifact["name"]]["digest"] == sweep_artifact["digest"]
    [segregation_artifact] = segregation_made.values()
    assert segregation_artifact["name"] == f"segregation-{file_sha256(segregation / 'segregation.parquet')[:12]}"
    assert {"segregation.parquet", "accuracy.parquet", "drops.parquet", "summary.json"} <= set(
        entries(segregation_artifact)
    )
    assert set(activations_used) == {model["name"]}
