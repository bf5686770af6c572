"""`specialize demo` end to end at a tiny size: killed mid-sweep, rerun, every stage runs and leaves its results, the
sweep's tables are those of an uninterrupted sweep; a rerun resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from helpers_faults import count_at_least, run_until, specialize
from helpers_report import open_in_browser

from common.layout import checkpoint_path
from lightning_modules.layer_names import CONV_LAYERS
from specialize import pipeline
from specialize.cli import build_parser, main
from specialize.demo import demo_study

pytestmark = pytest.mark.ray  # starts Ray through the command line


STAGE_FILES = {  # what each stage leaves, relative to the demo directory
    "images": "images/**/*.jpg",
    ".beton files": "data/**/*.beton",
    "training": "train/*/checkpoints/*.ckpt",
    "sweep": "lesion/chunks/**/*.parquet",
    "segregation units": "segregation/units/*.parquet",
    "random-task control units": "segregation_random/units/*.parquet",
    "decoding": "decode/*.parquet",
    "RSA": "rsa/*.parquet",
    "visualisation": "visualize/*.png",
}


def stage_stamps(out: Path) -> dict[str, dict[Path, int]]:
    """Per stage, the modification time of each of its files."""
    return {
        stage: {path: path.stat().st_mtime_ns for path in out.glob(pattern)} for stage, pattern in STAGE_FILES.items()
    }


@pytest.mark.slow
@pytest.mark.chromium  # opens the demo's report in headless chromium
def test_demo_killed_mid_sweep_reruns_every_stage_and_resumes(
    tmp_path: Path, capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [
        "demo",
        "--out",
        str(tmp_path),
        "--classes",
        "3",
        "--train-per-class",
        "12",
        "--test-per-class",
        "6",
        "--epochs",
        "1",
        "--images-per-task",
        "12",
        "--bootstraps",
        "50",
        "--resolution",
        "32",
        "--visualize-steps",
        "20",
    ]
    # kill -9 (the command, its Ray and its W&B service) once the sweep has written two of its 20 chunks: images,
    # data and the three networks are finished and stay; the sweep resumes from its chunks
    chunks = tmp_path / "lesion" / "chunks"
    assert run_until(specialize(*args), count_at_least(chunks, "**/*.parquet", 2), timeout=900)
    assert not (tmp_path / "lesion" / "manifest.json").exists() and len(list(chunks.glob("**/*.parquet"))) < 20
    capfd.readouterr()

    # The demo starts one local Ray per run, for all its Ray stages, after the stages that fork worker processes
    # (a process forked beside a running Ray driver can deadlock), so this test cannot share a module's Ray.
    starts, start_ray = [], ray.init
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: starts.append(1) or start_ray(*args, **kwargs))
    assert main(args) == 0
    assert len(starts) == 1 and not ray.is_initialized()
    printed, _ = capfd.readouterr()  # what reaches the terminal, the C libraries' lines too
    # Ray starts after three trainings in this process. That numba's threads print nothing then (compiled pipelines
    # only; the suite runs them uncompiled) is test_console::test_forking_after_loaders_prints_nothing_from_numba.
    assert f"report: {tmp_path / 'report.html'}" in printed
    shown = open_in_browser(tmp_path / "report.html", tmp_path / "report.png")  # the real demo's page renders
    assert {"Training", "Intact accuracy", "Lesion sweep", "Segregation", "Drop heatmap"} <= set(shown["headings"])
    assert shown["images"] and all(complete and width > 0 and in_full for complete, width, in_full in shown["images"])
    assert shown["requests"] == [(tmp_path / "report.html").resolve().as_uri()]
    for name in ("tiny_face", "tiny_object", "tiny_face_object"):
        assert name in printed
        assert (tmp_path / "train" / name / "checkpoints" / "last.ckpt").is_file()
    ranking = pd.read_parquet(tmp_path / "lesion" / "ranking.parquet")
    assert set(ranking["layer"]) == set(CONV_LAYERS) and set(ranking["task"]) == {"face", "object"}
    summary = json.loads((tmp_path / "segregation" / "summary.json").read_text())
    rows = summary["segregation_index"]["all_outputs"]["face+object"]
    assert [row["layer"] for row in rows] == list(CONV_LAYERS)
    assert all("p_value" in row for row in rows) and "p-value against 20 random partitions" in printed  # the null
    # After one epoch a task may have no right answer at all: its drops, and so the index, are then undefined (NaN).
    # A percentile interval need not hold its point estimate (3 classes x 6 test images leave it skewed).
    intact = summary["intact_accuracy"]["all_outputs"]
    undefined = min(task["accuracy"] for task in intact.values()) == 0
    for row in rows:
        assert (np.isnan(row["si"]) and undefined) or row["low"] <= row["high"], (row, intact)
    assert (tmp_path / "segregation" / "figures" / "segregation_by_layer.png").stat().st_size > 0
    assert f"figure: {tmp_path / 'figures' / 'segregation_vs_control.png'}" in printed  # the index beside its control
    assert (tmp_path / "figures" / "segregation_vs_control.png").stat().st_size > 0
    stamps = stage_stamps(tmp_path)
    counts = {stage: len(files) for stage, files in stamps.items()}
    # 2 tasks x (3 + 5 held-out classes) x (12 + 6) or 6 images; per task train/val/test/heldout and the pool's
    # train/val/test; best and last of 3 runs; intact + one-shot chunks of 16 filters (7 layers of at most 16, 6 of
    # 32); one slice of each task's 18 test images (every condition), twice; decoding's folds and summary; RSA's per
    # participant and summary tables; one visualisation grid per task
    assert counts == {
        "images": 2 * (3 * 18 + 5 * 6),
        ".beton files": 2 * 4 + 3,
        "training": 6,
        "sweep": 1 + 7 + 6 * 2,
        "segregation units": 2,
        "random-task control units": 2,
        "decoding": 2,
        "RSA": 2,
        "visualisation": 2,
    }
    for name in ("decode", "rsa", "visualize", "segregation_random"):
        assert json.loads((tmp_path / name / "manifest.json").read_text())["kind"]
    losses = pd.read_parquet(tmp_path / "lesion" / "filter_losses.parquet")
    segregation = pd.read_parquet(tmp_path / "segregation" / "segregation.parquet")

    assert main(args) == 0  # resumes: no finished stage's file is written again, and the results are the same
    rerun = stage_stamps(tmp_path)
    assert [stage for stage in STAGE_FILES if rerun[stage] != stamps[stage]] == []
    assert len(starts) == 2
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "lesion" / "filter_losses.parquet"), losses)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "segregation" / "segregation.parquet"), segregation)

    # the killed and resumed sweep equals an uninterrupted sweep of the same checkpoint with the demo's settings
    study = demo_study(build_parser().parse_args(args))
    checkpoint = checkpoint_path(tmp_path / "train" / "tiny_face_object", study.analyses.checkpoint)
    fresh = pipeline.lesion(checkpoint, tmp_path / "data", tmp_path / "fresh_sweep", study.analyses.lesion, False)
    for table in ("filter_losses", "ranking"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(fresh.out_dir / f"{table}.parquet"),
            pd.read_parquet(tmp_path / "lesion" / f"{table}.parquet"),
        )
