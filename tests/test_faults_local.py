"""Faults of the local stages: `data synth`, `data build` and `train` killed with SIGKILL at several points resume to
the results of an uninterrupted run without redoing finished parts; files a crash can leave damaged (state file,
.beton, JPEG, checkpoint) are detected and rebuilt, never trusted; a rerun of a finished training changes nothing;
a damaged JSON file or ranking table is a one-line error."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers_faults import (
    count_at_least,
    damaged_files,
    exists,
    killed_after,
    mtimes,
    run_to_end,
    run_until,
    specialize,
    temporaries,
    tiny_synthetic_images,
)
from helpers_train import ROOT, session_tiny_data, tiny_config

from common.io import read_json
from data_pipeline.beton import ImageEncoding, beton_sha256
from data_pipeline.build import BuildSettings, ImageCounts, build_dataset
from data_pipeline.synth import SynthSettings, generate
from lightning_modules.train import train
from specialize.cli import main

# augmentation on (seeded per sample), dropout on (RNG state), a plateau that fires (scheduler state)
TRAIN_OVERRIDES = (
    "trainer.epochs=4",
    "model.dropout=0.5",
    "optim.plateau_patience=0",
    "optim.plateau_factor=0.5",
    "wandb.mode=disabled",
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return session_tiny_data(tmp_path_factory)


def train_command(data_dir: Path, out: Path, name: str) -> list[str]:
    """`specialize train` of tiny_config's run."""
    return specialize(
        "train",
        "--config",
        ROOT / "configs" / "tiny_face_object.yaml",
        f"data.dir={data_dir}",
        f"output.root={out}",
        f"output.run_name={name}",
        "data.num_workers=1",
        "trainer.progress_bar=false",
        *TRAIN_OVERRIDES,
    )


def saved_epoch(run_dir: Path) -> int:
    """The epoch of the run's last.ckpt (-1 when there is none)."""
    path = run_dir / "checkpoints" / "last.ckpt"
    return torch.load(path, weights_only=True)["epoch"] if path.exists() else -1


@pytest.mark.slow
def test_train_killed_at_any_point_resumes_to_the_uninterrupted_run(data_dir, tmp_path):
    reference = train(tiny_config(data_dir, tmp_path, [*TRAIN_OVERRIDES, "output.run_name=reference"]))
    run_dir = tmp_path / "killed"
    command = train_command(data_dir, tmp_path, "killed")
    last = run_dir / "checkpoints" / "last.ckpt"
    assert run_until(command, exists(last))  # just after the first epoch's checkpoint
    assert saved_epoch(run_dir) == 0 and not damaged_files(run_dir)  # written atomically, even when killed
    run_until(command, killed_after(random.Random(0).uniform(3.0, 9.0)))  # anywhere (or not at all)
    assert saved_epoch(run_dir) >= 0 and not damaged_files(run_dir)
    run_to_end(command)
    assert not temporaries(run_dir)  # the rerun removed what the kills left

    resumed, uninterrupted = read_json(run_dir / "summary.json"), read_json(reference / "summary.json")
    assert resumed["metrics"] == uninterrupted["metrics"] and resumed["global_step"] == uninterrupted["global_step"]
    # metrics.csv: every row as in the uninterrupted run, none twice; a kill in the instant between an epoch's
    # checkpoint and its training-metrics row (these kill points aim there) loses only that row
    rows, reference_rows = (pd.read_csv(run / "metrics.csv") for run in (run_dir, reference))
    merged = reference_rows.merge(rows, how="left", indicator=True)
    assert len(rows) == len(merged[merged["_merge"] == "both"]) and not rows.duplicated().any()
    assert merged[merged["_merge"] == "left_only"]["lr"].notna().all()
    for name in ("last.ckpt", "best.ckpt"):
        weights = [
            torch.load(run / "checkpoints" / name, weights_only=True)["state_dict"] for run in (reference, run_dir)
        ]
        assert weights[0].keys() == weights[1].keys()
        assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


SYNTH_OPTIONS = (
    "--seed",
    3,
    "--tasks",
    "face,object",
    "--classes-per-task",
    3,
    "--train-per-class",
    40,
    "--test-per-class",
    6,
    "--heldout-classes",
    1,
    "--size",
    32,
    "--workers",
    2,
)  # 288 images


def build_command(images: Path, out: Path) -> list[str]:
    """`specialize data build` of the synthetic face and object folders (one writer: byte-identical files)."""
    return specialize(
        "data",
        "build",
        "--task",
        f"face={images / 'face'}",
        "--task",
        f"object={images / 'object'}",
        "--out",
        out,
        "--test-per-class",
        6,
        "--heldout-classes",
        1,
        "--write-mode",
        "raw",
        "--max-resolution",
        0,
        "--workers",
        1,
    )


@pytest.mark.slow
def test_data_synth_and_build_killed_at_any_point_resume_to_the_uninterrupted_data(tmp_path):
    reference_images, reference_data = tmp_path / "reference_images", tmp_path / "reference_data"
    run_to_end(specialize("data", "synth", "--out", reference_images, *SYNTH_OPTIONS))
    run_to_end(build_command(reference_images, reference_data))

    images, data = tmp_path / "images", tmp_path / "data"
    synth = specialize("data", "synth", "--out", images, *SYNTH_OPTIONS)
    assert run_until(synth, count_at_least(images, "*/*/*/*.jpg", 60))
    drawn = mtimes(images.glob("*/*/*/*.jpg"))
    run_until(synth, count_at_least(images, "*/*/*/*.jpg", 200))
    run_to_end(synth)
    assert not temporaries(images) and not damaged_files(images)
    assert {path: mtime for path, mtime in mtimes(images.glob("*/*/*/*.jpg")).items() if path in drawn} == drawn
    jpegs = sorted(path.relative_to(images) for path in images.glob("*/*/*/*.jpg"))
    assert jpegs == sorted(path.relative_to(reference_images) for path in reference_images.glob("*/*/*/*.jpg"))
    assert all((images / path).read_bytes() == (reference_images / path).read_bytes() for path in jpegs)

    build = build_command(images, data)
    assert run_until(build, exists(data / ".build_state.json"))  # the first .beton finished
    assert run_until(build, count_at_least(data, "*/.*.beton.*.tmp", 1))  # while writing the next one
    finished = mtimes(data / relative for relative in read_json(data / ".build_state.json"))
    assert not damaged_files(data)
    run_to_end(build)
    assert not temporaries(data) and not damaged_files(data)
    assert {path: path.stat().st_mtime_ns for path in finished} == finished  # finished files were not rewritten
    manifest, expected = read_json(data / "manifest.json"), read_json(reference_data / "manifest.json")
    assert manifest["hashes"] == expected["hashes"] and len(manifest["hashes"]) == 11  # 2 tasks x 4 splits, pool x 3
    assert manifest["skipped"] == expected["skipped"] == []
    for task in ("face", "object"):
        assert manifest["tasks"][task]["counts"] == expected["tasks"][task]["counts"]


@pytest.mark.slow
def test_a_checkpoint_cut_short_is_passed_over_and_a_finished_run_is_left_as_it_is(data_dir, tmp_path):
    reference = train(tiny_config(data_dir, tmp_path, [*TRAIN_OVERRIDES, "output.run_name=reference"]))
    finished = {
        path: path.read_bytes()
        for path in (reference / "summary.json", reference / "metrics.csv", reference / "checkpoints" / "last.ckpt")
    }
    train(tiny_config(data_dir, tmp_path, [*TRAIN_OVERRIDES, "output.run_name=reference"]))  # finished: trains nothing
    assert {path: path.read_bytes() for path in finished} == finished

    damaged = tiny_config(data_dir, tmp_path, [*TRAIN_OVERRIDES, "output.run_name=damaged", "trainer.epochs=2"])
    run_dir = train(damaged)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a crash of a non-atomic writer, or a bad copy
    with pytest.warns(UserWarning, match="last.ckpt is cut short"):
        train(tiny_config(data_dir, tmp_path, [*TRAIN_OVERRIDES, "output.run_name=damaged"]))  # on to 4 epochs
    assert read_json(run_dir / "summary.json")["metrics"] == read_json(reference / "summary.json")["metrics"]
    weights = [
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for run in (reference, run_dir)
    ]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_damaged_build_state_and_a_beton_cut_short_are_rebuilt(tmp_path):
    tiny_synthetic_images(tmp_path / "images")
    roots = {task: tmp_path / "images" / task for task in ("face", "object")}

    def build() -> dict:
        return build_dataset(
            roots,
            tmp_path / "data",
            BuildSettings(
                counts=ImageCounts(test=2, val=1), encoding=ImageEncoding(write_mode="raw", max_resolution=None)
            ),
            workers=1,
        )["hashes"]

    hashes = build()
    data = tmp_path / "data"
    victim = data / "object" / "train.beton"
    victim.write_bytes(victim.read_bytes()[:-1000])  # the build state still calls it finished
    others = mtimes(path for path in data.rglob("*.beton") if path != victim)
    assert build() == hashes and beton_sha256(victim) == hashes["object/train.beton"]  # written again, whole
    assert mtimes(others) == others  # only the damaged file was written again
    (data / ".build_state.json").write_text('{"face/train.beton": {"fingerp')  # cut short
    assert build() == hashes
    assert all(path.stat().st_mtime_ns != mtime for path, mtime in others.items())  # nothing trusted: all rewritten


def test_a_synthetic_jpeg_cut_short_is_drawn_again(tmp_path):
    settings = SynthSettings(
        seed=2, tasks=("car",), classes_per_task=2, train_per_class=3, test_per_class=1, heldout_classes=0, size=32
    )
    generate(tmp_path, settings, workers=1)
    images = sorted(tmp_path.glob("car/*/*/*.jpg"))
    victim, content = images[3], images[3].read_bytes()
    victim.write_bytes(content[: len(content) // 2])
    leftover = victim.parent / ".0000.jpg.abcd1234.tmp"  # what a kill during a write leaves
    leftover.write_bytes(b"partial")
    others = mtimes(path for path in images if path != victim)
    generate(tmp_path, settings, workers=1)
    assert victim.read_bytes() == content and not leftover.exists()
    assert mtimes(others) == others


def test_damaged_json_and_ranking_are_one_line_errors(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"name": "tiny", "tas')  # cut short
    assert main(["train", "--resume", str(run_dir)]) == 2
    error = capsys.readouterr().err.strip()
    assert (
        error.startswith(f"specialize train: error: {run_dir / 'config.json'} is not valid JSON") and "\n" not in error
    )
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    for name in ("manifest.json", "config.json"):
        (sweep / name).write_text("{}")
    (sweep / "ranking.parquet").write_bytes(b"PAR1" + bytes(100))
    assert main(["segregation", "--sweep", str(sweep), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert "not a finished lesion sweep (missing a readable ranking.parquet)" in error and "\n" not in error
    assert not (tmp_path / "out").exists()
