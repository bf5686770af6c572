"""Output directories: `prepare_output_dir` (every command's output path goes through it) and the one guard every
resumable stage uses, `check_same_job`: does this output directory already hold the same job?

A stage records what defines its job (its identity: inputs, settings that change results) in its output
directory. Rerunning the same job there resumes it; any other job would mix its results with those already
written, so it is refused in one line that names the first setting that differs and how to proceed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def check_output_path(path: str | os.PathLike, option: str = "--out") -> Path:
    """`path` as a Path, creating nothing; UserError, in one line, when it or one of its parents is an existing file."""
    from common.errors import UserError

    out = Path(path)
    blocking = next((folder for folder in (out, *out.parents) if folder.exists() and not folder.is_dir()), None)
    if blocking is not None:
        raise UserError(f"{option} {out}: {blocking} is a file, not a folder; choose another {option}")
    return out


def prepare_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Create the output folder `path` (and its parents) and return it; UserError, in one line, when `path` or one of
    its parents is an existing file or the folder cannot be created (permissions, read-only file system)."""
    from common.errors import UserError

    out = check_output_path(path, option)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"{option} {out}: cannot create the folder ({error.strerror}); choose a writable {option}"
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"{option} {out}: the folder is not writable; choose a writable {option}")
    return out


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {dotted key: leaf value}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def recorded_identity(path: str | os.PathLike, key: str | None = "identity") -> dict[str, Any] | None:
    """The identity a stage recorded in the JSON file `path` (its `key` section, or the whole file), or None."""
    from common.io import read_json

    if not os.path.isfile(path):
        return None
    data = read_json(path)
    return data.get(key, {}) if key is not None else data


def check_same_job(
    out: str | os.PathLike, job: str, stored: Mapping[str, Any] | None, current: Mapping[str, Any], advice: str
) -> None:
    """UserError when `out` holds a `job` whose recorded identity `stored` differs from `current` (None: no job yet).

    The message names the first differing (dotted) key with both values, then `advice`.
    """
    from common.errors import UserError
    from common.io import as_stored

    if stored is None:
        return
    old, new = flatten(as_stored(stored)), flatten(as_stored(current))
    differing = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    if differing:
        key = differing[0]
        raise UserError(f"{out} holds a {job} with another {key} ({old.get(key)!r}, now {new.get(key)!r}); {advice}")
