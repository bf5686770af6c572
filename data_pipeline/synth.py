"""The embedded default data: procedurally drawn image folders in four domains (face, object, food, car).

Writes `OUT/<task>/{train,test,heldout}/<class>/<n>.jpg`, the layout real data sets use, so that
`specialize data build` ingests it like any other folder. Every image is drawn from its own random
stream, seeded by (seed, task, class, split, n): output bytes depend only on the arguments, not on
worker count or scheduling, and a killed run resumes by skipping the images already written: each is written
under a hidden temporary name and renamed when complete, and a rerun redraws any image that is not a whole JPEG
(cut short by a machine crash) and removes temporary files a killed run left.
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from common.console import hidden
from common.errors import SettingError, UserError
from common.io import atomic_path
from common.pools import fork_pool
from common.stage import StageDir
from common.typed_config import check_at_least, check_choice
from data_pipeline.synth_domains import DOMAINS

SPLITS = ("train", "test", "heldout")
JPEG_QUALITY = 90


@dataclass(frozen=True)
class ImageJob:
    """One image to draw: which domain, class (index into that task's class stream), split and number."""

    task: str
    class_index: int
    split: str
    number: int
    path: str


def class_name(task: str, index: int) -> str:
    """Folder name of a synthetic class, e.g. face_003."""
    return f"{task}_{index:03d}"


def _stream(seed: int, task: str, *keys: int) -> np.random.Generator:
    """An independent random generator for (seed, task, keys...); stable across runs and machines."""
    return np.random.default_rng([seed, zlib.crc32(task.encode()), *keys])


def class_params(seed: int, task: str, class_index: int) -> dict:
    """The fixed parameters of one class (identity, category, dish or car model)."""
    identity, _ = DOMAINS[task]
    return identity(_stream(seed, task, class_index, 0))


def render_image(seed: int, task: str, class_index: int, split: str, number: int, size: int) -> np.ndarray:
    """Draw one image (uint8 HxWx3) of a class; the same arguments always give the same pixels."""
    _, render = DOMAINS[task]
    rng = _stream(seed, task, class_index, 1 + SPLITS.index(split), number)
    return render(class_params(seed, task, class_index), rng, size)


def encode_jpeg(image: np.ndarray) -> bytes:
    """JPEG bytes of an RGB image at the generator's fixed quality."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def plan_jobs(
    out: Path,
    tasks: Sequence[str],
    classes_per_task: int,
    train_per_class: int,
    test_per_class: int,
    heldout_classes: int,
) -> Iterator[ImageJob]:
    """Every image of the data set: training classes get train and test images, held-out classes `test_per_class`."""
    for task in tasks:
        for class_index in range(classes_per_task + heldout_classes):
            heldout = class_index >= classes_per_task
            counts = {"heldout": test_per_class} if heldout else {"train": train_per_class, "test": test_per_class}
            for split, count in counts.items():
                folder = out / task / split / class_name(task, class_index)
                for number in range(count):
                    yield ImageJob(task, class_index, split, number, str(folder / f"{number:04d}.jpg"))


def _write_batch(args: tuple[int, int, list[ImageJob]]) -> int:
    """Worker: draw and write a batch of images (temporary name, then rename); returns how many it wrote."""
    seed, size, jobs = args
    for job in jobs:
        image = render_image(seed, job.task, job.class_index, job.split, job.number, size)
        with atomic_path(job.path, durable=False) as tmp:
            tmp.write_bytes(encode_jpeg(image))
    return len(jobs)


def is_whole_jpeg(path: str) -> bool:
    """Whether `path` holds a JPEG from its start marker to its end marker (False when missing or cut short)."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(2)
            handle.seek(-2, os.SEEK_END)
            return start == b"\xff\xd8" and handle.read(2) == b"\xff\xd9"
    except OSError:
        return False


@dataclass(frozen=True)
class SynthSettings:
    """What the synthetic data set holds: every setting changes its bytes."""

    seed: int = 0
    tasks: tuple[str, ...] = tuple(DOMAINS)
    classes_per_task: int = 10
    train_per_class: int = 100
    test_per_class: int = 20  # also the images of each held-out class
    heldout_classes: int = 5
    size: int = 64  # image side in pixels

    def __post_init__(self) -> None:
        for task in self.tasks:
            check_choice("tasks", task, tuple(DOMAINS))
        if not self.tasks:
            raise SettingError("tasks", f"is empty; choose from {', '.join(DOMAINS)}")
        for key in ("classes_per_task", "train_per_class", "test_per_class"):
            check_at_least(key, getattr(self, key), 1)
        check_at_least("heldout_classes", self.heldout_classes, 0)
        check_at_least("size", self.size, 16)


def generate(out: str | os.PathLike, settings: SynthSettings = SynthSettings(), workers: int | None = None) -> dict:
    """Write the synthetic image folders under `out` and return the resolved configuration.

    Deterministic by seed (same bytes for the same settings); parallel over `workers` processes (default: all
    cores); resumable (images already on disk are kept), and a rerun of a finished data set redraws only images that
    are not whole JPEGs.
    """
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, not {workers}; leave it out to use every core")
    config = {**asdict(settings), "jpeg_quality": JPEG_QUALITY}
    stage = StageDir(Path(out), "synthetic data set", config, "choose a new --out or delete that folder").check()
    jobs = list(
        plan_jobs(
            stage.path,
            settings.tasks,
            settings.classes_per_task,
            settings.train_per_class,
            settings.test_per_class,
            settings.heldout_classes,
        )
    )
    todo = [job for job in jobs if not is_whole_jpeg(job.path)]
    if stage.finished and not todo:
        return config
    out = stage.start(config)
    for folder in sorted({os.path.dirname(job.path) for job in jobs}):
        os.makedirs(folder, exist_ok=True)
    _run_parallel(todo, settings.seed, settings.size, workers or os.cpu_count() or 1)
    classes = settings.classes_per_task + settings.heldout_classes
    stage.finish(
        "synth",
        seed=settings.seed,
        parameters=config,
        images=len(jobs),
        classes={task: [class_name(task, i) for i in range(classes)] for task in settings.tasks},
    )
    return config


def _run_parallel(jobs: list[ImageJob], seed: int, size: int, workers: int, batch: int = 64) -> None:
    """Draw `jobs` in batches over a process pool with a progress bar."""
    batches = [(seed, size, jobs[i : i + batch]) for i in range(0, len(jobs), batch)]
    progress = tqdm(total=len(jobs), desc="synth", unit="img", disable=hidden(bool(jobs)))
    if workers == 1:
        for args in batches:
            progress.update(_write_batch(args))
    else:
        with fork_pool(workers) as pool:
            for written in pool.imap_unordered(_write_batch, batches):
                progress.update(written)
    progress.close()
