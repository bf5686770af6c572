"""Run manifests: software versions, seed, data hashes and parameters, written beside every result (secrets
redacted: the command line by `common.redact.redact_argv`, every value by `write_json`)."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from common.io import write_json
from common.redact import redact_argv

TRACKED_PACKAGES = (
    "specialize",
    "torch",
    "torchvision",
    "pytorch-lightning",
    "ray",
    "ffcv",
    "wandb",
    "numpy",
    "pandas",
    "pyarrow",
    "pillow",
    "opencv-python-headless",
    "scikit-learn",
    "rsatoolbox",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages whose behaviour affects results."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The commit of the source tree this code runs from, or None outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def build_manifest(kind: str, **fields: Any) -> dict[str, Any]:
    """A manifest dict: what ran, when, where, with which versions, plus the caller's fields (seed, hashes, ...)."""
    return {
        "kind": kind,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "command": " ".join(redact_argv(sys.argv)),
        "git_commit": git_commit(),
        "versions": package_versions(),
        "pid": os.getpid(),
        **fields,
    }


def write_manifest(path: str | os.PathLike, kind: str, **fields: Any) -> dict[str, Any]:
    """Build a manifest and write it as JSON, atomically; returns it."""
    manifest = build_manifest(kind, **fields)
    write_json(path, manifest)
    return manifest
