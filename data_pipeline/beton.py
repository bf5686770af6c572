"""Writing FFCV .beton files from lists of (image path, label), in parallel, atomically and resumably.

A finished file is recorded in OUT/.build_state.json with the fingerprint of its contents, its size and hash; a
rerun skips it only when it is still there at that size. A damaged state file is ignored (every file is
rewritten), and a worker that fails (a full disk) stops the build with its error (`ffcv_writer`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.errors import SettingError, UserError
from common.io import atomic_path, read_state_json, remove_temporaries, write_json
from common.typed_config import check_choice
from data_pipeline.images import BadImage, decode_rgb

WRITE_MODES = ("raw", "jpg", "proportion", "smart")
STATE_FILE = ".build_state.json"


@dataclass(frozen=True)
class Item:
    """One sample to write: a source image file and its label."""

    path: str
    label: int


@dataclass(frozen=True)
class ImageEncoding:
    """How images are stored in a .beton (FFCV RGBImageField settings)."""

    write_mode: str = "jpg"
    max_resolution: int | None = 384
    jpeg_quality: int = 90
    compress_probability: float = 0.5

    def __post_init__(self) -> None:
        check_choice("write_mode", self.write_mode, WRITE_MODES)
        if not 1 <= self.jpeg_quality <= 100:
            raise SettingError("jpeg_quality", f"must be in 1..100, not {self.jpeg_quality}")

    def field(self):
        """The FFCV field that stores images this way."""
        from ffcv.fields import RGBImageField

        return RGBImageField(
            write_mode=self.write_mode,
            max_resolution=self.max_resolution,
            jpeg_quality=self.jpeg_quality,
            compress_probability=self.compress_probability,
        )


class SourceImages:
    """An indexable data set over items, decoded on demand in FFCV's writer processes (memory stays bounded).

    A file that fails to decode here (it changed after the check pass) is replaced by a grey placeholder and
    logged to `failure_log`; the caller refuses the output when that log is not empty.
    """

    def __init__(self, items: Sequence[Item], failure_log: str):
        self.items = items
        self.failure_log = failure_log

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        item = self.items[index]
        try:
            image, _ = decode_rgb(item.path)
        except BadImage as error:
            with open(self.failure_log, "a", errors="backslashreplace") as log:
                log.write(f"{item.path}: {error}\n")
            image = np.full((8, 8, 3), 128, dtype=np.uint8)
        return image, item.label


def fingerprint(items: Sequence[Item], encoding: ImageEncoding) -> str:
    """A hash of exactly what a .beton will contain, to recognise finished files when resuming."""
    digest = hashlib.sha256(json.dumps(asdict(encoding), sort_keys=True).encode())
    for item in items:
        digest.update(os.fsencode(item.path) + f"\0{item.label}\n".encode())  # file names in any encoding
    return digest.hexdigest()


def write_beton(path: Path, items: Sequence[Item], encoding: ImageEncoding, workers: int) -> None:
    """Write items to `path` with FFCV's parallel writer, under a temporary name renamed on success."""
    from ffcv.fields import IntField

    from data_pipeline.ffcv_writer import SupervisedDatasetWriter

    with tempfile.NamedTemporaryFile("w", suffix=".failures", delete=False) as log:
        failure_log = log.name
    try:
        with atomic_path(path) as tmp:
            writer = SupervisedDatasetWriter(
                str(tmp), {"image": encoding.field(), "label": IntField()}, num_workers=workers
            )
            writer.from_indexed_dataset(
                SourceImages(items, failure_log), chunksize=max(1, min(100, len(items) // workers))
            )
            failures = Path(failure_log).read_text().splitlines()
            if failures:
                raise UserError(
                    f"{len(failures)} image(s) changed while building {path.name} (first: {failures[0]}); "
                    "rerun the build"
                )
    finally:
        os.unlink(failure_log)


def beton_sha256(path: Path) -> str:
    """SHA-256 of a .beton file's content: its header's sizes, field names, per-sample metadata (pointers aside) and
    each sample's stored bytes in sample order. FFCV's writer workers place pages in the order they finish, so the
    file's bytes vary from build to build with more than one worker (`--workers`); this hash does not."""
    from ffcv.reader import Reader

    reader = Reader(str(path))
    header = reader.header
    sizes = [int(header[name]) for name in ("version", "num_fields", "page_size", "num_samples")]
    digest = hashlib.sha256(json.dumps([sizes, list(reader.field_names)]).encode())
    for field in reader.metadata.dtype.names:  # value by value: the records' padding bytes are not content
        values = reader.metadata[field]
        for name in values.dtype.names or (None,):
            if name is None or not name.endswith("_ptr"):  # a pointer says where the sample's data lie: layout
                digest.update(np.ascontiguousarray(values if name is None else values[name]).tobytes())
    data = np.memmap(path, dtype=np.uint8, mode="r")
    for _, pointer, size in np.sort(reader.alloc_table, order=["sample_id", "ptr"]):
        digest.update(data[pointer : pointer + size])
    return digest.hexdigest()


class BuildState:
    """Which .beton files of an output folder are complete (by fingerprint and size), and their SHA-256 hashes."""

    def __init__(self, out: Path):
        self.path = out / STATE_FILE
        state = read_state_json(self.path)
        self.done: dict[str, dict] = state if isinstance(state, dict) else {}

    def is_done(self, relative: str, digest: str, out: Path) -> bool:
        """Whether `relative` exists at its recorded size and was written from the same fingerprint."""
        entry, path = self.done.get(relative), out / relative
        return (
            isinstance(entry, dict)
            and entry.get("fingerprint") == digest
            and path.is_file()
            and path.stat().st_size == entry.get("size")
        )

    def mark_done(self, relative: str, digest: str, out: Path) -> None:
        """Record a finished file, its size and its hash."""
        path = out / relative
        self.done[relative] = {"fingerprint": digest, "size": path.stat().st_size, "sha256": beton_sha256(path)}
        write_json(self.path, self.done)

    def sha256(self, relative: str) -> str:
        """The recorded content hash of a finished file."""
        return self.done[relative]["sha256"]


def write_all(out: Path, outputs: dict[str, Sequence[Item]], encoding: ImageEncoding, workers: int) -> dict[str, str]:
    """Write every output (relative path -> items) not already complete; return relative path -> SHA-256."""
    state = BuildState(out)
    for folder in {out, *((out / relative).parent for relative in outputs)}:
        remove_temporaries(folder, recursive=False)
    for relative, items in outputs.items():
        digest = fingerprint(items, encoding)
        if state.is_done(relative, digest, out):
            continue
        print(f"writing {relative} ({len(items)} images)", file=sys.stderr, flush=True)
        write_beton(out / relative, items, encoding, workers)
        state.mark_done(relative, digest, out)
    return {relative: state.sha256(relative) for relative in outputs}
