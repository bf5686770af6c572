"""`specialize data build`: bad files, user errors, .beton round trip, held-out classes and pooled labels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers_data import make_tiny_data_dir, pixel_hash, session_data_dir, stored_images, tiny_jpeg
from PIL import Image

from common.errors import UserError
from common.io import read_json
from data_pipeline.beton import beton_sha256
from data_pipeline.data_dir import DataDir
from data_pipeline.images import decode_rgb
from specialize.cli import main

# FFCV's numba dispatchers raise harmless KeyErrors in finalizers at garbage collection.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _jpeg_bytes(seed: int, mode: str = "RGB") -> bytes:
    return tiny_jpeg(seed, size=24, mode=mode)


def _png(path: Path, array: np.ndarray, mode: str) -> None:
    Image.fromarray(array, mode=mode).save(path)


def _bad_folder(root: Path) -> None:
    """class_a: 3 good JPEGs and one of every bad kind; class_b: 3 good JPEGs; class_empty: nothing."""
    a, b = root / "class_a", root / "class_b"
    for folder in (a, b, root / "class_empty"):
        folder.mkdir(parents=True)
    for i in range(3):
        (a / f"good{i}.jpg").write_bytes(_jpeg_bytes(i))
        (b / f"good{i}.jpg").write_bytes(_jpeg_bytes(10 + i))
    good = _jpeg_bytes(99)
    (a / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (a / "corrupt.jpg").write_bytes(good[:20] + bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)))
    (a / "empty.jpg").write_bytes(b"")
    (a / "notes.txt").write_text("not a picture\n")
    (a / "cmyk.jpg").write_bytes(_jpeg_bytes(5, mode="CMYK"))
    _png(a / "gray.png", np.full((20, 20), 100, np.uint8), "L")
    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(a / "deep.png")
    _png(a / "alpha.png", np.dstack([np.full((20, 20, 3), 10, np.uint8), np.full((20, 20), 0, np.uint8)]), "RGBA")
    os.symlink(root / "vanished.jpg", a / "unreadable.jpg")


def test_bad_files_are_converted_or_skipped_with_reasons(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _bad_folder(tmp_path / "src")
    code = main(
        [
            "data",
            "build",
            "--task",
            "face=" + str(tmp_path / "src"),
            "--out",
            str(tmp_path / "out"),
            "--test-per-class",
            "1",
            "--val-per-class",
            "1",
            "--workers",
            "2",
        ]
    )
    assert code == 0
    manifest = read_json(tmp_path / "out" / "manifest.json")
    reasons = {Path(entry["path"]).name: entry["reason"].split(" (")[0] for entry in manifest["skipped"]}
    assert reasons == {
        "truncated.jpg": "truncated or corrupt image",
        "corrupt.jpg": "truncated or corrupt image",
        "empty.jpg": "empty file",
        "notes.txt": "not an image file",
        "unreadable.jpg": "unreadable file",
        "class_empty": "empty class folder",
    }
    converted = {Path(entry["path"]).name: entry["conversion"] for entry in manifest["converted"]}
    assert sorted(converted) == ["alpha.png", "cmyk.jpg", "deep.png", "gray.png"]
    assert "16-bit" in converted["deep.png"] and "alpha" in converted["alpha.png"]
    task = manifest["tasks"]["face"]
    assert task["classes"] == ["class_a", "class_b"]
    assert task["counts"]["per_class"]["train"] == {"class_a": 5, "class_b": 1}
    assert task["counts"]["val"] == 2 and task["counts"]["test"] == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("built ") and "skipped 6" in lines[-1] and "converted 4" in lines[-1]


def test_conversions_give_sensible_pixels(tmp_path: Path) -> None:
    _bad_folder(tmp_path)
    assert np.all(decode_rgb(tmp_path / "class_a" / "gray.png")[0] == 100)
    assert np.all(decode_rgb(tmp_path / "class_a" / "deep.png")[0] == round(40000 / 257))
    assert np.all(decode_rgb(tmp_path / "class_a" / "alpha.png")[0] == 255)  # fully transparent on white
    assert decode_rgb(tmp_path / "class_a" / "cmyk.jpg")[0].shape == (24, 24, 3)


@pytest.mark.parametrize(
    "make_root, message",
    [
        (lambda root: None, "does not exist"),
        (lambda root: (root / "empty_class").mkdir(parents=True), "no class folders"),
    ],
)
def test_missing_root_or_no_classes_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, make_root, message: str
) -> None:
    make_root(tmp_path / "root")
    code = main(["data", "build", "--task", f"face={tmp_path / 'root'}", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_bad_option_values_are_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _bad_folder(tmp_path / "src")
    for extra in (["--classes", "5"], ["--class-list", str(tmp_path / "nope.txt")], ["--pool", "face+car"]):
        code = main(["data", "build", "--task", f"face={tmp_path / 'src'}", "--out", str(tmp_path / "out"), *extra])
        assert code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return session_data_dir(tmp_path_factory)


def test_manifest_hash_is_of_the_content_and_changes_with_one_pixel(built: Path, tmp_path: Path) -> None:
    """The manifest's hash of a .beton is its content's (`beton_sha256`): the same for a copy, another once one stored
    byte of an image changes. (Not the file's bytes, which FFCV's writer workers lay out in the order they finish:
    test_data_build_flags builds with 1 and 2 workers.)"""
    from ffcv.reader import Reader

    source = DataDir(built).beton("face", "test")
    assert read_json(built / "manifest.json")["hashes"]["face/test.beton"] == beton_sha256(source)
    copy = tmp_path / "copy.beton"
    data = bytearray(source.read_bytes())
    copy.write_bytes(data)
    assert beton_sha256(copy) == beton_sha256(source)
    data[int(Reader(str(source)).alloc_table["ptr"].max())] ^= 1  # a byte of the last-placed image
    copy.write_bytes(data)
    assert beton_sha256(copy) != beton_sha256(source)


def test_round_trip_is_exact_in_raw_mode_and_labels_match_folders(built: Path) -> None:
    data = DataDir(built)
    synth = built.parent / "synth"
    for task in data.task_names:
        images, labels = stored_images(data.beton(task, "test"))
        sources = sorted(
            (synth / task / "test").glob("*/*.jpg"), key=lambda p: (data.classes(task).index(p.parent.name), p)
        )
        assert len(sources) == len(images) == 9
        for image, label, source in zip(images, labels, sources):
            assert data.classes(task)[label] == source.parent.name
            assert np.array_equal(image, decode_rgb(source)[0])


def test_round_trip_within_jpeg_tolerance(tmp_path: Path) -> None:
    data_dir = make_tiny_data_dir(
        tmp_path, tasks=("car",), classes=2, train=2, test=2, heldout=0, write_mode="jpg", val=1
    )
    images, labels = stored_images(DataDir(data_dir).beton("car", "test"))
    sources = sorted((tmp_path / "synth" / "car" / "test").glob("*/*.jpg"))
    errors = [np.abs(image.astype(int) - decode_rgb(src)[0].astype(int)).mean() for image, src in zip(images, sources)]
    assert len(errors) == 4 and max(errors) < 4.0
    assert labels.tolist() == [0, 0, 1, 1]


def test_heldout_classes_never_in_train_or_test(built: Path) -> None:
    data = DataDir(built)
    synth = built.parent / "synth"
    for task in data.task_names:
        assert data.heldout_classes(task) and not set(data.heldout_classes(task)) & set(data.classes(task))
        trained = {
            pixel_hash(x) for split in ("train", "val", "test") for x in stored_images(data.beton(task, split))[0]
        }
        heldout_images, heldout_labels = stored_images(data.beton(task, "heldout"))
        assert not trained & {pixel_hash(x) for x in heldout_images}
        assert sorted(set(heldout_labels.tolist())) == list(range(len(data.heldout_classes(task))))
        sources = sorted((synth / task / "heldout").glob("*/*.jpg"))
        assert {pixel_hash(decode_rgb(s)[0]) for s in sources} == {pixel_hash(x) for x in heldout_images}


def test_pool_has_global_labels(built: Path) -> None:
    data = DataDir(built)
    label_space = data.label_space(["face", "object"])
    for split in ("train", "val", "test"):
        pool_images, pool_labels = stored_images(data.pool_beton(["face", "object"], split))
        expected = {}
        for task in ("face", "object"):
            images, labels = stored_images(data.beton(task, split))
            expected.update({pixel_hash(x): int(y) + label_space.offset(task) for x, y in zip(images, labels)})
        assert {pixel_hash(x): int(y) for x, y in zip(pool_images, pool_labels)} == expected
        assert len(pool_labels) == len(expected) and set(pool_labels.tolist()) == set(range(label_space.total_classes))
    assert label_space.offset("object") == 3


def test_rebuild_skips_finished_files(built: Path, tmp_path: Path) -> None:
    from data_pipeline.beton import ImageEncoding
    from data_pipeline.build import BuildSettings, ImageCounts, build_dataset

    before = {p: p.stat().st_mtime_ns for p in built.rglob("*.beton")}
    manifest = build_dataset(
        {t: built.parent / "synth" / t for t in ("face", "object")},
        built,
        BuildSettings(
            counts=ImageCounts(test=3, val=2),
            heldout_classes=2,
            encoding=ImageEncoding(write_mode="raw", max_resolution=None),
        ),
        workers=1,
    )
    assert {p: p.stat().st_mtime_ns for p in built.rglob("*.beton")} == before
    assert set(manifest["hashes"]) == {str(p.relative_to(built)) for p in before}


def test_validation_images_come_from_training_images_apart_from_train_and_test(built: Path) -> None:
    data = DataDir(built)
    synth = built.parent / "synth"
    for task in data.task_names:
        hashes = {
            split: [pixel_hash(x) for x in stored_images(data.beton(task, split))[0]]
            for split in ("train", "val", "test")
        }
        assert len(hashes["val"]) == 2 * len(data.classes(task)) == 2 * 3
        assert not set(hashes["val"]) & set(hashes["train"]) and not set(hashes["val"]) & set(hashes["test"])
        sources = {pixel_hash(decode_rgb(path)[0]) for path in (synth / task / "train").glob("*/*.jpg")}
        assert set(hashes["val"]) | set(hashes["train"]) == sources and len(hashes["train"]) == 3 * 6
        assert data.counts(task)["per_class"]["val"] == dict.fromkeys(data.classes(task), 2)


def test_building_other_inputs_into_a_built_directory_is_refused(built: Path, capsys: pytest.CaptureFixture) -> None:
    before = {p: p.stat().st_mtime_ns for p in built.rglob("*") if p.is_file()}
    code = main(
        [
            "data",
            "build",
            "--task",
            f"face={built.parent / 'synth' / 'face'}",
            "--out",
            str(built),
            "--test-per-class",
            "3",
            "--val-per-class",
            "2",
            "--heldout-classes",
            "2",
            "--write-mode",
            "raw",
            "--max-resolution",
            "0",
        ]
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1
    assert "holds a data build with another pools" in error and "new --out" in error
    assert {p: p.stat().st_mtime_ns for p in built.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("command", [["data", "build", "--task", "face=SRC"], ["data", "synth", "--tasks", "face"]])
def test_output_path_under_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, command: list[str]
) -> None:
    _bad_folder(tmp_path / "src")
    (tmp_path / "file.txt").write_text("a file, not a folder\n")
    command = [part.replace("SRC", str(tmp_path / "src")) for part in command]
    assert main([*command, "--out", str(tmp_path / "file.txt" / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "file.txt is a file, not a folder" in error


def test_file_names_in_any_encoding_are_used_or_skipped_and_recorded_readably(tmp_path: Path) -> None:
    source = tmp_path / "src"
    for name in ("a", "b"):
        (source / name).mkdir(parents=True)
        for i in range(3):
            (source / name / f"{i}.jpg").write_bytes(tiny_jpeg(i + ord(name)))
    latin1_image = os.fsencode(source / "a") + b"/caf\xe9.jpg"  # not UTF-8, as archives from other systems hold
    with open(latin1_image, "wb") as handle:
        handle.write(tiny_jpeg(50))
    with open(os.fsencode(source / "a") + b"/notes\xff.txt", "wb") as handle:
        handle.write(b"not an image\n")
    assert (
        main(
            [
                "data",
                "build",
                "--task",
                f"face={source}",
                "--out",
                str(tmp_path / "out"),
                "--test-per-class",
                "1",
                "--val-per-class",
                "1",
                "--write-mode",
                "raw",
            ]
        )
        == 0
    )
    text = (tmp_path / "out" / "manifest.json").read_text()
    assert "\\udc" not in text  # no lone surrogates: the names are written readably
    manifest = read_json(tmp_path / "out" / "manifest.json")
    assert [entry["path"] for entry in manifest["skipped"]] == [str(source / "a" / "notes\\xff.txt")]
    assert manifest["tasks"]["face"]["counts"]["per_class"]["train"] == {"a": 2, "b": 1}
    stored = {
        pixel_hash(x)
        for split in ("train", "val", "test")
        for x in stored_images(DataDir(tmp_path / "out").beton("face", split))[0]
    }
    assert pixel_hash(decode_rgb(os.fsdecode(latin1_image))[0]) in stored


def _classes_some_unreadable(root: Path, good: tuple[str, ...], bad: tuple[str, ...]) -> None:
    """Class folders with three JPEGs each (`good`) or with three broken files each (`bad`)."""
    for name in good + bad:
        (root / name).mkdir(parents=True)
        for i in range(3):
            (root / name / f"{i}.jpg").write_bytes(tiny_jpeg(i) if name in good else b"\xff\xd8\xff broken")


def test_classes_and_heldout_classes_are_drawn_among_readable_ones(tmp_path: Path) -> None:
    from data_pipeline.build import BuildSettings, ImageCounts, build_dataset

    good, bad = ("c0", "c2", "c4"), ("c1", "c3", "c5")
    _classes_some_unreadable(tmp_path / "src", good, bad)
    for seed in range(3):
        manifest = build_dataset(
            {"face": tmp_path / "src"},
            tmp_path / f"out{seed}",
            BuildSettings(classes=2, heldout_classes=1, counts=ImageCounts(test=1, val=1), seed=seed),
            workers=1,
        )
        task = manifest["tasks"]["face"]
        assert len(task["classes"]) == 2 and len(task["heldout_classes"]) == 1
        assert set(task["classes"] + task["heldout_classes"]) == set(good)
    with pytest.raises(UserError, match="asked for 4 held-out classes but only 3 of the 6"):
        build_dataset(
            {"face": tmp_path / "src"},
            tmp_path / "four",
            BuildSettings(heldout_classes=4, counts=ImageCounts(test=1, val=1)),
        )
    with pytest.raises(UserError, match="asked for 3 classes but 2 of the 5 classes besides the 1 held out"):
        build_dataset(
            {"face": tmp_path / "src"},
            tmp_path / "three",
            BuildSettings(classes=3, heldout_classes=1, counts=ImageCounts(test=1, val=1)),
        )
    assert not list((tmp_path / "four").glob("*/*.beton")) and not list((tmp_path / "three").glob("*/*.beton"))
