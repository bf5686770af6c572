"""Atomic writes of results in open formats (JSON, Parquet), checks that a result file is complete, content hashes.

Every file the project writes goes through `atomic_path`: a temporary (hidden) file beside the target, flushed
to disk and renamed onto it only when complete, so a kill, a crash or a full disk never leaves a half-written
file under a result's name; a resumed stage removes the temporary files a kill left (`remove_temporaries`). A
full disk raises OSError (ENOSPC, EDQUOT or EFBIG) naming the file being written; the CLI turns it into one line.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import UserError
from common.redact import redact

if TYPE_CHECKING:
    import pandas as pd

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
UMASK = os.umask(0o022)  # read once (setting it is the only way), then restored
os.umask(UMASK)
TEMPORARY_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # atomic_path's: .<name>.<mkstemp's 8 characters>.tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; flush it to disk (unless not `durable`: for many small files that a
    resume checks anyway) and rename it onto `path` only if the block succeeds. An OSError of a full disk leaves
    nothing behind and names `path` (its `filename`)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise _naming(error, path) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        tmp_path.chmod(0o666 & ~UMASK)  # as a plain open() would create it (mkstemp makes it private)
        yield tmp_path
        if durable:
            _flush_to_disk(tmp_path)
        os.replace(tmp_path, path)
    except OSError as error:
        raise _naming(error, path) from None
    finally:
        tmp_path.unlink(missing_ok=True)


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Delete the temporaries of `atomic_path` for `path` alone that a killed writer left beside it."""
    path = Path(path)
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if TEMPORARY_NAME.fullmatch(leftover.name) and leftover.is_file():
            leftover.unlink(missing_ok=True)


def remove_temporaries(root: str | os.PathLike, recursive: bool = True) -> None:
    """Delete the temporary files of `atomic_path` that a killed run left in `root` (and its subfolders)."""
    leftovers = Path(root).rglob(".*.tmp") if recursive else Path(root).glob(".*.tmp")
    for leftover in leftovers:
        if TEMPORARY_NAME.fullmatch(leftover.name) and leftover.is_file():
            leftover.unlink(missing_ok=True)


def _flush_to_disk(path: Path) -> None:
    """fsync a finished file, so that a rename after it never exposes a file whose data a machine crash lost."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _naming(error: OSError, path: Path) -> OSError:
    """`error`, naming `path` as the file being written when it is a full disk and names no file yet."""
    if error.errno in DISK_FULL_ERRNOS and not error.filename:
        error.filename = str(path)
    return error


def as_stored(data: Any) -> Any:
    """`data` as `write_json` stores it: JSON types (tuples become lists, paths strings), secrets redacted; so that
    stored and new values compare."""
    return redact(json.loads(json.dumps(data, default=str)))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON (secrets redacted, `common.redact`), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(as_stored(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; UserError when it is not valid JSON (cut short or not ours)."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(
            f"{path} is not valid JSON ({error}); it is damaged: restore it or rerun the command "
            "that wrote it into a new directory"
        ) from None


def read_state_json(path: str | os.PathLike) -> Any | None:
    """A resume-state JSON file the project wrote, or None when it is missing or damaged (so it is rebuilt)."""
    try:
        return read_json(path) if Path(path).is_file() else None
    except UserError:
        return None


def write_parquet(path: str | os.PathLike, frame: pd.DataFrame, metadata: Mapping[str, str] | None = None) -> None:
    """Write a DataFrame as Parquet, atomically; `metadata` goes into the file's key-value metadata (read it with
    `parquet_metadata`; pandas ignores it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        if metadata:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata}), tmp)
        else:
            frame.to_parquet(tmp, index=False)


def parquet_metadata(path: str | os.PathLike, key: str) -> str | None:
    """The value `write_parquet` stored under `key` in a Parquet file's metadata, or None."""
    import pyarrow.parquet as pq

    value = (pq.read_schema(path).metadata or {}).get(key.encode())
    return value.decode() if value is not None else None


def readable_parquet(path: str | os.PathLike) -> bool:
    """Whether `path` is a complete Parquet file (its footer reads): False when missing, truncated or corrupt."""
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
    except (OSError, ValueError):
        return False
    return True


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
