"""Faults of the Ray stages: `lesion`, `segregation` and `tune` killed with SIGKILL at several points resume to the
results of an uninterrupted run without redoing finished units; a Ray worker killed mid-task in segregation is
retried; sweep chunks and segregation units damaged by a crash are recomputed, not trusted; a full disk (a small
tmpfs) stops `lesion` and `segregation` in one line with nothing half-written; secrets in the environment and on the
command line reach no file that train, lesion and segregation write. One local Ray session (2 CPUs) serves the
module; the killed commands join it with --address, as on a cluster."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pandas as pd
import psutil
import pytest
from helpers_faults import (
    count_at_least,
    damaged_files,
    exists,
    fill,
    kill_first_process,
    mtimes,
    on_disk_bytes,
    own_processes_with,
    run_to_end,
    run_until,
    small_disk,
    specialize,
    temporaries,
)
from helpers_train import ROOT, build_tiny_data, untrained_checkpoint

from analysis.segregation.run import SegregationSettings, run_segregation
from common.io import read_json
from common.ray_runner import Resources
from common.redact import REDACTED
from specialize.cli import main
from sweeps.distributed import run_sweep
from sweeps.settings import SweepSettings

pytestmark = pytest.mark.slow

LAYERS = ("conv1_1", "conv5_3")
SWEEP_SETTINGS = SweepSettings(
    images_per_task=16, seed=0, layers=LAYERS, filters_per_task=4, lesions_per_pass=1, batch_size=8
)
SWEEP_OPTIONS = (
    "--images-per-task",
    16,
    "--layers",
    *LAYERS,
    "--filters-per-task",
    4,
    "--lesions-per-pass",
    1,
    "--batch-size",
    8,
    "--no-progress",
)
FRACTIONS = (0.0, 0.1, 0.3, 0.5)
# 64 test images per task in slices of 16: 8 units, each a slice with every condition
SEGREGATION = SegregationSettings(fractions=FRACTIONS, n_bootstraps=100, batch_size=16, images_per_unit=16)
SEGREGATION_OPTIONS = (
    "--fractions",
    ",".join(map(str, FRACTIONS)),
    "--bootstraps",
    100,
    "--batch-size",
    16,
    "--images-per-unit",
    16,
    "--null-partitions",
    0,  # as SEGREGATION (the library's default): no null; the command's default is 20
)
TABLES = ("predictions", "accuracy", "drops", "segregation", "tasks")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A built face+object data directory (16 test images per class) and an untrained tiny model on it."""
    return untrained_checkpoint(tmp_path_factory.mktemp("faults_ray"), train_per_class=8, test_per_class=16)


@pytest.fixture(scope="module")
def sweep(trained, ray_cluster) -> Path:
    """The uninterrupted sweep of the tiny model."""
    data, checkpoint = trained
    out = data.parent / "sweep"
    run_sweep(checkpoint, data, out, settings=SWEEP_SETTINGS, address=ray_cluster, progress=False)
    return out


@pytest.fixture(scope="module")
def segregation(sweep, ray_cluster) -> Path:
    """The uninterrupted segregation analysis of that sweep."""
    out = sweep.parent / "segregation"
    run_segregation(sweep, out, settings=SEGREGATION, address=ray_cluster)
    return out


def assert_same_tables(directory: Path, reference: Path, names: tuple[str, ...]) -> None:
    for name in names:
        pd.testing.assert_frame_equal(
            pd.read_parquet(directory / f"{name}.parquet"), pd.read_parquet(reference / f"{name}.parquet")
        )


def test_lesion_killed_at_any_point_resumes_to_the_uninterrupted_sweep(trained, sweep, ray_cluster, tmp_path):
    data, checkpoint = trained
    out = tmp_path / "sweep"
    command = specialize(
        "lesion", "--checkpoint", checkpoint, "--data", data, "--out", out, "--address", ray_cluster, *SWEEP_OPTIONS
    )
    chunks = out / "chunks"
    kill_points = [
        count_at_least(chunks, "oneshot/*.parquet", 3),  # among the chunks (9 in all)
        exists(out / "filter_losses.parquet"),
    ]  # before the ranking and manifest
    finished = {}
    for ready in kill_points:
        assert run_until(command, ready)
        assert not damaged_files(out)
        assert mtimes(finished) == finished  # chunks finished before an earlier kill were not computed again
        finished = mtimes(chunks.rglob("*.parquet"))
    run_to_end(command)
    assert mtimes(finished) == finished and not temporaries(out)
    assert_same_tables(out, sweep, ("filter_losses", "ranking"))
    assert read_json(out / "manifest.json")["kind"] == "lesion_sweep"


def test_segregation_killed_at_any_point_or_losing_a_worker_resumes_to_the_uninterrupted_analysis(
    sweep, segregation, ray_cluster, tmp_path
):
    out = tmp_path / "segregation"
    command = specialize("segregation", "--sweep", sweep, "--out", out, "--address", ray_cluster, *SEGREGATION_OPTIONS)
    units = out / "units"
    assert run_until(command, count_at_least(units, "*.parquet", 1))  # among the units (8 in all)
    assert not damaged_files(out)
    finished = mtimes(units.glob("*.parquet"))
    assert 0 < len(finished) < 8
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:  # the rerun also loses a Ray worker in the middle of a unit
        killer = pool.submit(kill_first_process, "answer_slice", stop)
        assert run_until(command, exists(out / "predictions.parquet"))  # before the tables and figures
        stop.set()
        killed_pid = killer.result()
    assert killed_pid is not None and not psutil.pid_exists(killed_pid)  # Ray retried its unit
    assert mtimes(finished) == finished and not damaged_files(out)
    run_to_end(command)
    assert mtimes(finished) == finished and not temporaries(out)
    assert_same_tables(out, segregation, TABLES)
    assert read_json(out / "summary.json") == read_json(segregation / "summary.json")
    assert not damaged_files(out) and len(list((out / "figures").iterdir())) == 6


def test_damaged_chunks_and_units_are_recomputed(trained, sweep, segregation, ray_cluster, tmp_path):
    data, checkpoint = trained
    damaged_sweep = shutil.copytree(sweep, tmp_path / "sweep")
    for name in ("ranking.parquet", "manifest.json"):  # killed before its last writes: the chunks are its resume state
        (damaged_sweep / name).unlink()
    chunk, intact = (
        damaged_sweep / "chunks" / "oneshot" / "conv5_3_0001.parquet",
        damaged_sweep / "chunks" / "intact.parquet",
    )
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])  # cut short
    intact.write_bytes(b"PAR1" + bytes(300))  # garbage
    kept = mtimes(path for path in (damaged_sweep / "chunks").rglob("*.parquet") if path not in (chunk, intact))
    run_sweep(checkpoint, data, damaged_sweep, settings=SWEEP_SETTINGS, address=ray_cluster, progress=False)
    assert mtimes(kept) == kept and not damaged_files(damaged_sweep)
    assert_same_tables(damaged_sweep, sweep, ("filter_losses", "ranking"))

    damaged = shutil.copytree(segregation, tmp_path / "segregation")
    (damaged / "manifest.json").unlink()  # killed before its last write: the units are its resume state
    unit = damaged / "units" / "object_00000016.parquet"
    unit.write_bytes(unit.read_bytes()[:-100])
    kept = mtimes(path for path in (damaged / "units").glob("*.parquet") if path != unit)
    run_segregation(sweep, damaged, settings=SEGREGATION, address=ray_cluster)
    assert mtimes(kept) == kept and not damaged_files(damaged)
    assert_same_tables(damaged, segregation, TABLES)


def test_one_ray_worker_gives_the_tables_of_two(sweep, segregation, ray_cluster, tmp_path):
    """The uninterrupted analysis ran its 8 slices on two workers at once (1 CPU each of the 2); one worker at a time
    (2 CPUs per task) gives the same tables."""
    one = tmp_path / "one_worker"
    run_segregation(sweep, one, settings=replace(SEGREGATION, resources=Resources(cpus=2)), address=ray_cluster)
    assert len(list((one / "units").glob("*.parquet"))) == 8
    assert_same_tables(one, segregation, TABLES)


def wait_for_trials_to_die(timeout: float = 60) -> None:
    """Wait until Ray has killed the trial workers of a killed Tune driver (so none still writes)."""
    deadline = time.monotonic() + timeout
    while own_processes_with("ImplicitFunc"):
        assert time.monotonic() < deadline, "Ray left the killed driver's trials running"
        time.sleep(0.2)


def test_tune_killed_at_any_point_resumes_to_the_uninterrupted_grid(ray_cluster, tmp_path):
    data = build_tiny_data(tmp_path, train_per_class=16, test_per_class=8)
    overrides = (
        f"data.dir={data}",
        "trainer.epochs=2",
        "data.augment=false",
        "data.num_workers=1",
        "wandb.mode=disabled",
    )
    config = ROOT / "configs" / "tiny_face_object.yaml"
    assert (
        main(
            [
                "tune",
                "--config",
                str(config),
                "--seeds",
                "0,1",
                "--out",
                str(tmp_path / "reference"),
                "--address",
                ray_cluster,
                *overrides,
            ]
        )
        == 0
    )
    reference = pd.read_parquet(tmp_path / "reference" / "trials.parquet")
    out = tmp_path / "runs"
    command = specialize(
        "tune", "--config", config, "--seeds", "0,1", "--out", out, "--address", ray_cluster, *overrides
    )
    runs = [out / "trials" / f"tiny_face_object-seed{seed}" / "train" for seed in (0, 1)]
    assert run_until(command, count_at_least(out, "trials/*/train/summary.json", 1))  # one finished, one not yet
    wait_for_trials_to_die()
    assert not damaged_files(out)
    finished = mtimes(run / "checkpoints" / "last.ckpt" for run in runs if (run / "summary.json").exists())
    run_to_end(command)
    assert finished and mtimes(finished) == finished  # a finished training was not redone
    table = pd.read_parquet(out / "trials.parquet")
    pd.testing.assert_frame_equal(table.drop(columns="directory"), reference.drop(columns="directory"))


@pytest.mark.root
def test_lesion_and_segregation_on_a_full_disk_fail_in_one_line_and_resume_once_space_is_freed(
    trained, sweep, segregation, ray_cluster, tmp_path, capsys
):
    data, checkpoint = trained
    with small_disk(tmp_path / "disk") as disk:
        out = disk / "sweep"
        lesion = [
            "lesion",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(data),
            "--out",
            str(out),
            "--address",
            ray_cluster,
            *map(str, SWEEP_OPTIONS),
        ]
        ballast = fill(disk, leave=6 * 4096)  # room for config.json, intact.parquet and a few chunks
        assert main(lesion) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith(f"specialize lesion: error: No space left on device while writing {out}/chunks/")
        assert not damaged_files(out) and not temporaries(out)
        ballast.unlink()
        assert main(lesion) == 0
        assert_same_tables(out, sweep, ("filter_losses", "ranking"))

        out = disk / "segregation"
        analysis = [
            "segregation",
            "--sweep",
            str(sweep),
            "--out",
            str(out),
            "--address",
            ray_cluster,
            *map(str, SEGREGATION_OPTIONS),
        ]
        before_figures = on_disk_bytes(
            path
            for path in segregation.rglob("*")
            if path.is_file() and "figures" not in path.parts and path.name != "manifest.json"
        )
        ballast = fill(disk, leave=before_figures + 2 * 4096)  # the figures do not fit
        assert main(analysis) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith(f"specialize segregation: error: No space left on device while writing {out}/figures/")
        assert not damaged_files(out) and not temporaries(out)  # no figure cut short
        ballast.unlink()
        assert main(analysis) == 0
        assert_same_tables(out, segregation, TABLES)
        assert not damaged_files(out) and len(list((out / "figures").iterdir())) == 6


def test_secrets_never_reach_the_files_of_train_lesion_and_segregation(trained, ray_cluster, tmp_path, monkeypatch):
    data, checkpoint = trained
    key, token = "fake0123456789abcdef0123456789abcdef01", "lab-storage-token-0123456789"
    monkeypatch.setenv("WANDB_API_KEY", key)
    monkeypatch.setenv("LAB_STORAGE_TOKEN", token)

    def specialize_main(*args: object) -> None:
        """`specialize ARGS` in this process, as typed on a command line (the manifests record sys.argv)."""
        monkeypatch.setattr(sys, "argv", ["specialize", *map(str, args)])
        assert main(list(map(str, args))) == 0

    specialize_main(
        "train",
        "--config",
        ROOT / "configs" / "tiny_face_object.yaml",
        f"data.dir={data}",
        f"output.root={tmp_path / 'train'}",
        "trainer.epochs=1",
        "data.num_workers=1",
        "trainer.progress_bar=false",
        "wandb.mode=offline",
        f"wandb.group=lab-{key}",
        f"wandb.tags=[{token}]",
    )
    specialize_main(
        "lesion",
        "--checkpoint",
        checkpoint,
        "--data",
        data,
        "--out",
        tmp_path / "sweep",
        "--address",
        ray_cluster,
        "--images-per-task",
        8,
        "--layers",
        "conv5_3",
        "--no-progress",
    )
    specialize_main(
        "segregation",
        "--sweep",
        tmp_path / "sweep",
        "--out",
        tmp_path / "segregation",
        "--address",
        ray_cluster,
        "--bootstraps",
        20,
        "--wandb-project",
        f"p-{key}",
    )
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len([path for path in written if "wandb" in path.parts]) > 4  # both W&B offline runs are there
    leaked = [
        path.relative_to(tmp_path)
        for path in written
        if key.encode() in path.read_bytes() or token.encode() in path.read_bytes()
    ]
    assert not leaked
    for manifest in ("train/tiny_face_object/manifest.json", "segregation/manifest.json"):
        assert REDACTED in read_json(tmp_path / manifest)["command"]
