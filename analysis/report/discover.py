"""Find what a report covers: every run directory under the given one, recognised by its manifest's `kind`.

A run directory is one with a `manifest.json` that has a `kind` (train, lesion_sweep, segregation, data, synth,
study, decoding, ...; written when the run has finished). The search descends through directories without a
manifest (a demo directory, `train/`, `trials/`) and into a study and its trials, but not into other run
directories, whose subdirectories are their own working state (a segregation's `units/`, a decoding's
`activations/`). Data directories that runs name in their manifest (`data`) are added when they exist, so a study's
report shows the data it was trained on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.report.elements import display_json
from common.errors import UserError
from common.io import read_json
from common.layout import CHECKPOINT_DIR

CONTAINER_KINDS = frozenset({"study", "trial"})  # run directories whose subdirectories hold further runs
SHOWN_BY_STUDY = frozenset({"trial"})  # a study's trials: its section lists them, their stages have sections
WORKING_STATE = frozenset({"wandb", CHECKPOINT_DIR, "chunks", "units", "ray_tune", "lightning_logs", "__pycache__"})
MAX_DEPTH = 4  # a study's trials/<trial>/<stage> is 3 levels down


@dataclass(frozen=True)
class Run:
    """One run directory: where it is, its manifest and (when written) its config.json."""

    path: Path
    manifest: dict[str, Any]
    config: dict[str, Any]

    @property
    def kind(self) -> str:
        """What the directory is (the manifest's `kind`)."""
        return str(self.manifest["kind"])

    def json(self, name: str) -> dict[str, Any]:
        """Another JSON file of the run (summary.json, ...) for display, or {} when it is missing or unreadable."""
        return display_json(read_json_or_empty(self.path / name))


def read_json_or_empty(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} when the file is missing, unreadable or not an object."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_run(path: Path) -> Run | None:
    """The run in `path` (its manifest and config for display: file names in any encoding made printable), or None
    when it has no readable manifest with a `kind`."""
    manifest = read_json_or_empty(path / "manifest.json")
    if not isinstance(manifest.get("kind"), str):
        return None
    return Run(path, display_json(manifest), display_json(read_json_or_empty(path / "config.json")))


def discover_runs(root: str | os.PathLike) -> list[Run]:
    """Every run directory under `root` (itself included), in directory order, then the data directories they
    name; UserError when `root` is not a directory or holds nothing the report recognises."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{os.fsdecode(root)} is not a directory; pass a run, demo or study directory")
    runs = _walk(root, 0, set())
    if not runs:
        raise UserError(
            f"{os.fsdecode(root)} holds no run directory (no manifest.json with a `kind` within "
            f"{MAX_DEPTH} levels); pass the --out directory of a specialize command, a demo or a study"
        )
    return runs + referenced_data(runs)


def _walk(directory: Path, depth: int, seen: set[Path]) -> list[Run]:
    """The runs in and under `directory`; `seen` (resolved paths) keeps linked directories from being read twice."""
    resolved = directory.resolve()
    if resolved in seen:
        return []
    seen.add(resolved)
    run = read_run(directory)
    if run is not None and run.kind not in CONTAINER_KINDS:
        return [run]
    found = [run] if run is not None and run.kind not in SHOWN_BY_STUDY else []
    if depth < MAX_DEPTH:
        for child in _subdirectories(directory):
            found += _walk(child, depth + 1, seen)
    return found


def _subdirectories(directory: Path) -> list[Path]:
    """Subdirectories (linked ones too) in name order, without hidden ones and known working state; unreadable
    ones are skipped."""
    try:
        children = sorted(entry for entry in directory.iterdir() if entry.is_dir())
    except OSError:
        return []
    return [child for child in children if not child.name.startswith(".") and child.name not in WORKING_STATE]


def referenced_data(runs: list[Run]) -> list[Run]:
    """The data directories the runs name (manifest field `data`) that exist and were not found under the root."""
    known = {run.path.resolve() for run in runs}
    found: list[Run] = []
    for run in runs:
        named = read_json_or_empty(run.path / "manifest.json").get("data")  # as written, not as displayed
        if not isinstance(named, str):
            continue
        path = Path(named).resolve()
        data = read_run(path) if path not in known and path.is_dir() else None
        if data is not None and data.kind == "data":
            known.add(path)
            found.append(data)
    return found


def runs_of(runs: list[Run], kind: str) -> list[Run]:
    """The runs of one kind, in discovery order."""
    return [run for run in runs if run.kind == kind]
