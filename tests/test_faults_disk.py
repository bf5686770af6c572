"""A full disk while writing (a real one: a small tmpfs; and a file-size limit, EFBIG) stops `data build` and `train`
with one line naming the file, exit code 2 and no half-written file; the same command resumes once space is freed.
The Ray stages are tried in test_faults_ray.py."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
from helpers_faults import damaged_files, fill, small_disk, temporaries, tiny_synthetic_images
from helpers_train import ROOT, session_tiny_data

from common.io import read_json
from specialize.cli import main

DISK_FULL = "error: No space left on device while writing "
ADVICE = (
    "; free space (or raise the quota or file-size limit) or choose another --out, "
    "then rerun the same command to resume"
)


@pytest.fixture
def disk(tmp_path):
    with small_disk(tmp_path / "disk") as root:
        yield root


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return tiny_synthetic_images(tmp_path_factory.mktemp("full_disk_images"))


def build_args(images: Path, out: Path) -> list[str]:
    return [
        "data",
        "build",
        "--task",
        f"face={images / 'face'}",
        "--task",
        f"object={images / 'object'}",
        "--out",
        str(out),
        "--test-per-class",
        "2",
        "--val-per-class",
        "1",
        "--write-mode",
        "raw",
        "--workers",
        "1",
    ]


def last_error_line(capsys) -> str:
    """The last line on stderr (progress bars and library warnings come before it)."""
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.root
@pytest.mark.slow
def test_data_build_on_a_full_disk_fails_in_one_line_and_resumes_once_space_is_freed(images, disk, capsys):
    out = disk / "data"
    ballast = fill(disk, leave=4 << 20)  # less than one .beton (FFCV writes 8 MiB pages)
    assert main(build_args(images, out)) == 2
    error = last_error_line(capsys)
    assert error.startswith(f"specialize data build: {DISK_FULL}{out}/") and error.endswith(".beton" + ADVICE)
    assert not damaged_files(out) and not temporaries(out)  # no .beton cut short, no temporary left behind
    ballast.unlink()
    assert main(build_args(images, out)) == 0
    assert (
        not damaged_files(out) and len(read_json(out / "manifest.json")["hashes"]) == 9
    )  # 3 splits x (2 tasks + pool)


def test_a_file_size_limit_is_reported_like_a_full_disk(images, tmp_path, capsys):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))  # EFBIG for files over 1 MiB (Python ignores SIGXFSZ)
    try:
        assert main(build_args(images, tmp_path / "data")) == 2
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert last_error_line(capsys).startswith(f"specialize data build: error: File too large while writing {tmp_path}")
    assert not damaged_files(tmp_path / "data") and not temporaries(tmp_path / "data")


@pytest.mark.root
@pytest.mark.slow
def test_train_on_a_full_disk_fails_in_one_line_and_resumes_once_space_is_freed(tmp_path_factory, disk, capsys):
    args = [
        "train",
        "--config",
        str(ROOT / "configs" / "tiny_face_object.yaml"),
        f"data.dir={session_tiny_data(tmp_path_factory)}",
        f"output.root={disk}",
        "trainer.epochs=2",
        "data.num_workers=1",
        "trainer.progress_bar=false",
        "wandb.mode=disabled",
    ]
    capsys.readouterr()
    ballast = fill(disk, leave=2 << 20)  # less than a checkpoint (4 MiB)
    assert main(args) == 2
    error = last_error_line(capsys)
    assert error.startswith(f"specialize train: {DISK_FULL}{disk}/tiny_face_object/checkpoints/") and ADVICE in error
    assert not damaged_files(disk) and not temporaries(disk)  # no checkpoint cut short
    ballast.unlink()
    assert main(args) == 0
    assert read_json(disk / "tiny_face_object" / "summary.json")["epochs"] == 2 and not damaged_files(disk)
