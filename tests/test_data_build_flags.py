"""Every flag of `specialize data build`, given through the CLI, with an observable effect on what is built.

The sources are the synthetic folders (train/, test/, heldout/ per task, 24 px JPEGs); five small builds
between them exercise every flag, and each check reads back what the build wrote (.beton pixels and labels,
the manifest's classes and counts, the files present).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers_data import pixel_hash, stored_images

from common.io import read_json
from data_pipeline.data_dir import DataDir
from data_pipeline.images import decode_rgb
from data_pipeline.synth import SynthSettings, generate
from specialize.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
TASKS = ("face", "object", "car")
SIZE = 24


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """5 classes per task (6 train + 3 test images each) and 2 held-out classes (3 images each), per task."""
    root = tmp_path_factory.mktemp("flags") / "synth"
    generate(
        root,
        SynthSettings(
            seed=3,
            tasks=TASKS,
            classes_per_task=5,
            train_per_class=6,
            test_per_class=3,
            heldout_classes=2,
            size=SIZE,
        ),
        workers=2,
    )
    return root


def build(sources: Path, out: Path, *flags: str, tasks=TASKS) -> dict:
    """`specialize data build` of `tasks` with `flags`; the manifest it wrote."""
    task_args = [arg for task in tasks for arg in ("--task", f"{task}={sources / task}")]
    assert main(["data", "build", *task_args, "--out", str(out), *flags]) == 0
    return read_json(out / "manifest.json")


def source_by_hash(sources: Path, task: str) -> dict[str, Path]:
    """Every source image of a task by the hash of its decoded pixels."""
    return {pixel_hash(decode_rgb(path)[0]): path for path in sorted((sources / task).glob("*/*/*.jpg"))}


def test_selection_split_counts_pools_and_raw_pixels(sources, tmp_path):
    (tmp_path / "exclude.txt").write_text("face_000\n# a comment\nface_002\n")
    (tmp_path / "objects.txt").write_text("object_003\nobject_000\nobject_004\n")  # label order, not sorted
    out = tmp_path / "data"
    manifest = build(
        sources,
        out,
        "--classes",
        "face=2",
        "--exclude",
        f"face={tmp_path / 'exclude.txt'}",
        "--class-list",
        f"object={tmp_path / 'objects.txt'}",
        "--train-per-class",
        "4",
        "--test-per-class",
        "2",
        "--val-per-class",
        "1",
        "--heldout-classes",
        "1",
        "--heldout-per-class",
        "2",
        "--split",
        "seed",
        "--seed",
        "1",
        "--write-mode",
        "proportion",
        "--compress-probability",
        "0",
        "--max-resolution",
        "0",
        "--pool",
        "face+car",
        "--workers",
        "1",
    )
    tasks = manifest["tasks"]
    # --classes face=2 among the classes --exclude leaves; --class-list gives object's classes in its order
    assert len(tasks["face"]["classes"]) == 2 and set(tasks["face"]["classes"]) <= {"face_001", "face_003", "face_004"}
    assert tasks["object"]["classes"] == ["object_003", "object_000", "object_004"]
    assert tasks["car"]["classes"] == [f"car_{i:03d}" for i in range(5)]
    for task in TASKS:
        counts = tasks[task]["counts"]["per_class"]
        assert set(counts["train"].values()) == {4}  # --train-per-class caps 6 + 3 - 2 test - 1 val images at 4
        assert set(counts["val"].values()) == {1}  # --val-per-class
        assert set(counts["test"].values()) == {2}  # --test-per-class
        assert len(tasks[task]["heldout_classes"]) == 1 and list(counts["heldout"].values()) == [2]
        assert tasks[task]["split"] == "seed"
    assert {path.name for path in out.glob("pool_*")} == {"pool_face+car"}  # --pool replaces the default pool
    assert json.loads((out / "config.json").read_text())["workers"] == 1

    data = DataDir(out)
    from_train_folder = 0
    for task, split in [(task, "test") for task in TASKS] + [("face", "heldout")]:
        by_hash = source_by_hash(sources, task)
        images, labels = stored_images(data.beton(task, split))
        assert images.shape[1:] == (SIZE, SIZE, 3)  # --max-resolution 0 keeps the size
        names = data.heldout_classes(task) if split == "heldout" else data.classes(task)
        for image, label in zip(images, labels):
            source = by_hash[pixel_hash(image)]  # --compress-probability 0: raw pixels, exactly the source's
            assert source.parent.name == names[label]  # labels follow the class order (--class-list's for object)
            from_train_folder += split == "test" and source.parent.parent.name == "train"
    assert from_train_folder > 0  # --split seed draws test images from all of a class's images, train/ included


@pytest.fixture(scope="module")
def jpeg_builds(sources, tmp_path_factory) -> dict[str, Path]:
    """Two builds with the root's own split that differ in --seed and in how images are compressed."""
    root = tmp_path_factory.mktemp("jpeg")
    common = [
        "--classes",
        "face=3",
        "--test-per-class",
        "3",
        "--val-per-class",
        "1",
        "--split",
        "premade",
        "--max-resolution",
        "0",
    ]
    build(sources, root / "q5", *common, "--seed", "2", "--balance", "--write-mode", "jpg", "--jpeg-quality", "5")
    build(
        sources,
        root / "q95",
        *common,
        "--seed",
        "4",
        "--write-mode",
        "proportion",
        "--compress-probability",
        "1",
        "--jpeg-quality",
        "95",
    )
    return {"q5": root / "q5", "q95": root / "q95"}


def jpeg_error(data_dir: Path, sources: Path, task: str) -> float:
    """Mean absolute pixel error of a task's stored test images against the root's test/ files of its classes, paired
    in label order (a large error when the stored images are other files)."""
    data = DataDir(data_dir)
    images, _ = stored_images(data.beton(task, "test"))
    classes = data.classes(task)
    paths = sorted(
        (p for p in (sources / task / "test").glob("*/*.jpg") if p.parent.name in classes),
        key=lambda p: (classes.index(p.parent.name), p),
    )
    assert len(paths) == len(images)
    return float(
        np.mean(
            [np.abs(image.astype(int) - decode_rgb(path)[0].astype(int)).mean() for image, path in zip(images, paths)]
        )
    )


def test_seed_balance_premade_split_and_jpeg_settings(jpeg_builds, sources):
    q5, q95 = (read_json(jpeg_builds[name] / "manifest.json")["tasks"] for name in ("q5", "q95"))
    assert q5["face"]["classes"] != q95["face"]["classes"]  # --seed chooses other classes
    # --balance trims every task to the smallest total (face: 3 classes x (6 - 1 val) train images); without it,
    # totals differ
    assert [q5[task]["counts"]["train"] for task in TASKS] == [15, 15, 15]
    assert [q95[task]["counts"]["train"] for task in TASKS] == [15, 25, 25]
    for task in TASKS:
        error_q5, error_q95 = (
            jpeg_error(jpeg_builds["q5"], sources, task),
            jpeg_error(jpeg_builds["q95"], sources, task),
        )
        # --split premade: the stored test images are the root's test/ files (paired in order, they differ little)
        assert error_q95 < 3, (task, error_q95)
        # --write-mode jpg at --jpeg-quality 5 loses far more than --compress-probability 1 at quality 95, which
        # still compresses every image (--compress-probability 0 above keeps them exact)
        assert error_q5 > 3 * error_q95 and error_q95 > 0.1, (task, error_q5, error_q95)


def test_max_resolution_and_workers(sources, tmp_path):
    hashes = {}
    for workers in ("1", "2"):
        manifest = build(
            sources,
            tmp_path / workers,
            "--max-resolution",
            "16",
            "--write-mode",
            "raw",
            "--test-per-class",
            "2",
            "--val-per-class",
            "1",
            "--workers",
            workers,
            tasks=("car",),
        )
        hashes[workers] = manifest["hashes"]
    # --workers changes the speed, never the content (the manifest's hashes are of the content: data_pipeline.beton)
    assert hashes["1"] == hashes["2"]
    images, labels = stored_images(DataDir(tmp_path / "1").beton("car", "test"))
    assert images.shape[1:] == (16, 16, 3)  # --max-resolution: the longest side stored
    by_class = DataDir(tmp_path / "1").classes("car")
    resized = {
        pixel_hash(cv2.resize(decode_rgb(path)[0], (16, 16), interpolation=cv2.INTER_AREA)): path.parent.name
        for path in (sources / "car").glob("*/*/*.jpg")
    }
    assert [resized[pixel_hash(image)] for image in images] == [by_class[label] for label in labels]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--workers", "0"], "--workers must be at least 1"),
        (["--classes", "face=9"], "asked for 9 classes"),
        (["--exclude", "face=/nonexistent/list.txt"], "cannot read class list"),
    ],
)
def test_bad_flag_values_are_one_line(sources, tmp_path, capsys, flags, message):
    code = main(["data", "build", "--task", f"face={sources / 'face'}", "--out", str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before the output folder is made
