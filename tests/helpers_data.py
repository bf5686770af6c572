"""Helpers for data tests (and for any test that needs a tiny built data directory)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from filelock import FileLock

from data_pipeline.beton import ImageEncoding
from data_pipeline.build import BuildSettings, ImageCounts, build_dataset
from data_pipeline.synth import SynthSettings, generate

Built = TypeVar("Built", Path, tuple[Path, ...])


def make_tiny_data_dir(
    root: Path,
    tasks: tuple[str, ...] = ("face", "object"),
    classes: int = 3,
    train: int = 6,
    test: int = 3,
    heldout: int = 2,
    size: int = 32,
    write_mode: str = "raw",
    seed: int = 1,
    pools: Sequence[str] | None = None,
    val: int = 2,
) -> Path:
    """Synthetic folders under root/synth (`train` + `val` training images per class, of which the build sets `val`
    apart for validation), built into root/data (raw pixels by default); returns the data dir."""
    generate(
        root / "synth",
        SynthSettings(
            seed=seed,
            tasks=tuple(tasks),
            classes_per_task=classes,
            train_per_class=train + val,
            test_per_class=test,
            heldout_classes=heldout,
            size=size,
        ),
        workers=2,
    )
    build_dataset(
        {task: root / "synth" / task for task in tasks},
        root / "data",
        BuildSettings(
            counts=ImageCounts(test=test, val=val),
            heldout_classes=heldout,
            encoding=ImageEncoding(write_mode=write_mode, max_resolution=None),
            pools=tuple(pools) if pools else None,
        ),
        workers=2,
    )
    return root / "data"


def tiny_jpeg(seed: int, size: int = 8, mode: str = "RGB") -> bytes:
    """The bytes of a small random JPEG (RGB, or converted to `mode`, e.g. CMYK)."""
    import io

    from PIL import Image

    pixels = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def stored_images(beton: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every image (uint8 NxHxWx3, as stored, no transform) and label of a constant-size .beton, in file order."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption

    from data_pipeline.ffcv_fixes import install_ffcv_fixes

    install_ffcv_fixes()
    loader = Loader(
        str(beton),
        batch_size=64,
        num_workers=1,
        order=OrderOption.SEQUENTIAL,
        drop_last=False,
        pipelines={"image": [SimpleRGBImageDecoder()], "label": [IntDecoder()]},
    )
    images, labels = zip(*((np.array(x), np.array(y).reshape(-1)) for x, y in loader))
    return np.concatenate(images), np.concatenate(labels)


def pixel_hash(image: np.ndarray) -> str:
    """A hash of an image's exact pixels."""
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def built_once_per_session(tmp_path_factory, name: str, build: Callable[[Path], Built]) -> Built:
    """`build(folder)` for a folder `name` made once per pytest session and shared (read only) by every module that
    asks for it, on every pytest-xdist worker: the first to ask builds it under a file lock while the others wait;
    all get what the build returned (a path, or a tuple of paths), recorded beside the folder."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the workers' basetemps are folders of one
    folder, record = shared / name, shared / f"{name}.built.json"
    with FileLock(shared / f"{name}.lock"):
        if not record.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            built = build(folder)
            paths = [built] if isinstance(built, Path) else list(built)
            record.write_text(json.dumps({"paths": [str(path) for path in paths], "one": isinstance(built, Path)}))
    recorded = json.loads(record.read_text())
    paths = tuple(Path(path) for path in recorded["paths"])
    return paths[0] if recorded["one"] else paths


def session_data_dir(tmp_path_factory) -> Path:
    """`make_tiny_data_dir` with its defaults, built once per pytest session and shared by the modules that only read
    it (and its synth/ folders)."""
    return built_once_per_session(tmp_path_factory, "tiny_data", make_tiny_data_dir)


def compiled_environment() -> dict[str, str]:
    """This process's environment with numba compiling (conftest runs the suite's FFCV pipelines uncompiled)."""
    return {**os.environ, "NUMBA_DISABLE_JIT": "0"}
