"""Helpers for data tests (and for any test that needs a tiny built data directory)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_pipeline.beton import ImageEncoding
from data_pipeline.build import BuildSettings, ImageCounts, build_dataset
from data_pipeline.synth import SynthSettings, generate


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


def session_data_dir(tmp_path_factory) -> Path:
    """`make_tiny_data_dir` with its defaults, built once per pytest session and shared by the modules that only read
    it (and its synth/ folders)."""
    root = tmp_path_factory.getbasetemp() / "tiny_data"
    data = root / "data"
    return data if (data / "manifest.json").is_file() else make_tiny_data_dir(root)
