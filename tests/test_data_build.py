"""`specialize data build`: bad files, user errors, .beton round trip, held-out classes and pooled labels."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_pipeline.data_dir import DataDir
from data_pipeline.images import decode_rgb
from specialize.cli import main
from common.io import read_json
from helpers_data import make_tiny_data_dir, pixel_hash, stored_images

# FFCV's numba dispatchers raise harmless KeyErrors in finalizers at garbage collection.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _jpeg_bytes(seed: int, mode: str = "RGB", size: int = 24) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


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
    code = main(["data", "build", "--task", "face=" + str(tmp_path / "src"), "--out", str(tmp_path / "out"),
                 "--test-per-class", "1", "--workers", "2"])
    assert code == 0
    manifest = read_json(tmp_path / "out" / "manifest.json")
    reasons = {Path(entry["path"]).name: entry["reason"].split(" (")[0] for entry in manifest["skipped"]}
    assert reasons == {"truncated.jpg": "truncated or corrupt image", "corrupt.jpg": "truncated or corrupt image",
                       "empty.jpg": "empty file", "notes.txt": "not an image file",
                       "unreadable.jpg": "unreadable file", "class_empty": "empty class folder"}
    converted = {Path(entry["path"]).name: entry["conversion"] for entry in manifest["converted"]}
    assert sorted(converted) == ["alpha.png", "cmyk.jpg", "deep.png", "gray.png"]
    assert "16-bit" in converted["deep.png"] and "alpha" in converted["alpha.png"]
    task = manifest["tasks"]["face"]
    assert task["classes"] == ["class_a", "class_b"]
    assert task["counts"]["per_class"]["train"] == {"class_a": 6, "class_b": 2}
    assert task["counts"]["test"] == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("built ") and "skipped 6" in lines[-1] and "converted 4" in lines[-1]


def test_conversions_give_sensible_pixels(tmp_path: Path) -> None:
    _bad_folder(tmp_path)
    assert np.all(decode_rgb(tmp_path / "class_a" / "gray.png")[0] == 100)
    assert np.all(decode_rgb(tmp_path / "class_a" / "deep.png")[0] == round(40000 / 257))
    assert np.all(decode_rgb(tmp_path / "class_a" / "alpha.png")[0] == 255)  # fully transparent on white
    assert decode_rgb(tmp_path / "class_a" / "cmyk.jpg")[0].shape == (24, 24, 3)


@pytest.mark.parametrize("make_root, message", [
    (lambda root: None, "does not exist"),
    (lambda root: (root / "empty_class").mkdir(parents=True), "no class folders"),
])
def test_missing_root_or_no_classes_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      make_root, message: str) -> None:
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
    return make_tiny_data_dir(tmp_path_factory.mktemp("built"))


def test_round_trip_is_exact_in_raw_mode_and_labels_match_folders(built: Path) -> None:
    data = DataDir(built)
    synth = built.parent / "synth"
    for task in data.task_names:
        images, labels = stored_images(data.beton(task, "test"))
        sources = sorted((synth / task / "test").glob("*/*.jpg"), key=lambda p: (data.classes(task).index(p.parent.name), p))
        assert len(sources) == len(images) == 9
        for image, label, source in zip(images, labels, sources):
            assert data.classes(task)[label] == source.parent.name
            assert np.array_equal(image, decode_rgb(source)[0])


def test_round_trip_within_jpeg_tolerance(tmp_path: Path) -> None:
    data_dir = make_tiny_data_dir(tmp_path, tasks=("car",), classes=2, train=2, test=2, heldout=0, write_mode="jpg")
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
        trained = {pixel_hash(x) for split in ("train", "test") for x in stored_images(data.beton(task, split))[0]}
        heldout_images, heldout_labels = stored_images(data.beton(task, "heldout"))
        assert not trained & {pixel_hash(x) for x in heldout_images}
        assert sorted(set(heldout_labels.tolist())) == list(range(len(data.heldout_classes(task))))
        sources = sorted((synth / task / "heldout").glob("*/*.jpg"))
        assert {pixel_hash(decode_rgb(s)[0]) for s in sources} == {pixel_hash(x) for x in heldout_images}


def test_pool_has_global_labels(built: Path) -> None:
    data = DataDir(built)
    label_space = data.label_space(["face", "object"])
    for split in ("train", "test"):
        pool_images, pool_labels = stored_images(data.pool_beton(["face", "object"], split))
        expected = {}
        for task in ("face", "object"):
            images, labels = stored_images(data.beton(task, split))
            expected.update({pixel_hash(x): int(y) + label_space.offset(task) for x, y in zip(images, labels)})
        assert {pixel_hash(x): int(y) for x, y in zip(pool_images, pool_labels)} == expected
        assert len(pool_labels) == len(expected) and set(pool_labels.tolist()) == set(range(label_space.total_classes))
    assert label_space.offset("object") == 3


def test_rebuild_skips_finished_files(built: Path, tmp_path: Path) -> None:
    from data_pipeline.build import build_dataset
    from data_pipeline.beton import ImageEncoding

    before = {p: p.stat().st_mtime_ns for p in built.rglob("*.beton")}
    manifest = build_dataset({t: built.parent / "synth" / t for t in ("face", "object")}, built, test_per_class=3,
                             heldout_classes=2, encoding=ImageEncoding(write_mode="raw", max_resolution=None), workers=2)
    assert {p: p.stat().st_mtime_ns for p in built.rglob("*.beton")} == before
    assert set(manifest["hashes"]) == {str(p.relative_to(built)) for p in before}
