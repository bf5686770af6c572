"""Output directories: `prepare_output_dir`, which every command's output path goes through (one line for a path
under a file or a folder that cannot be created), and `flatten`, the dotted view of nested settings that identities
are compared in (`common.stage.StageDir`)."""

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
