"""What was run: every run directory with its kind, time, seed and code version, its resolved config and
manifest; the software versions; and the data (classes, image counts per split, pools, skipped files)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.report.discover import Run
from analysis.report.elements import Section, Table, cell, display_text, frame_table, settings_table

MANIFEST_COMMON = ("kind", "created", "host", "command", "git_commit", "versions", "pid")
SPLIT_LABELS = {"train": "train", "test": "test", "heldout": "held-out"}
LISTED_SKIPPED = 20  # skipped files listed by name; the rest are counted by reason


def relative(path: Path, root: Path) -> str:
    """`path` relative to the report's root when inside it (the root's own name for the root), else absolute."""
    try:
        text = os.fsdecode(path.resolve().relative_to(root.resolve()))
    except ValueError:
        text = os.fsdecode(path.resolve())
    return display_text(text if text != "." else os.fsdecode(root.resolve().name))


def what_was_run(runs: list[Run], root: Path) -> Section:
    """The runs table, the software versions, and each run's config and manifest (collapsed)."""
    table = pd.DataFrame(
        [
            {
                "directory": relative(run.path, root),
                "kind": run.kind,
                "created": run.manifest.get("created"),
                "seed": cell(run.manifest.get("seed")),
                "git commit": str(run.manifest.get("git_commit") or "")[:10] or None,
            }
            for run in runs
        ]
    )
    details = [
        Section(f"{relative(run.path, root)} ({run.kind})", tables=run_tables(run), collapsed=True) for run in runs
    ]
    return Section(
        "What was run",
        text=[f"{len(runs)} run directories, recognised by the kind in their manifest.json."],
        tables=[frame_table(table, "Runs", max_rows=len(table)), versions_table(runs)],
        subsections=[
            Section(
                "Configs and manifests",
                text=["Each run's resolved config.json and its manifest.json, flattened to dotted settings."],
                subsections=details,
                collapsed=True,
            )
        ],
    )


def run_tables(run: Run) -> list[Table]:
    """A run's config.json and the run-specific fields of its manifest, flattened to dotted settings."""
    tables = [settings_table(run.config, "config.json")] if run.config else []
    fields = {key: value for key, value in run.manifest.items() if key not in MANIFEST_COMMON}
    tables.append(
        settings_table(
            {
                "created": run.manifest.get("created"),
                "host": run.manifest.get("host"),
                "command": run.manifest.get("command"),
                "git commit": run.manifest.get("git_commit"),
                **fields,
            },
            "manifest.json",
        )
    )
    return tables


def versions_table(runs: list[Run]) -> Table:
    """Package versions across the runs' manifests; a package with several versions is flagged."""
    versions: dict[str, list[str]] = {}
    for run in runs:
        for package, version in (run.manifest.get("versions") or {}).items():
            listed = versions.setdefault(package, [])
            if cell(version) not in listed:
                listed.append(cell(version))
    rows = [
        [package, ", ".join(found), "differs between runs" if len(found) > 1 else ""]
        for package, found in versions.items()
    ]
    return Table("Software versions", ["package", "version", ""], rows, [False, False, False])


def data_section(runs: list[Run], root: Path) -> Section:
    """One subsection per data directory: classes and images per task and split, pools, skipped files."""
    return Section(
        "Data",
        text=[
            "The built data directories: classes and image counts per task and split, "
            "the tasks' pools, and every file the build skipped, with its reason."
        ],
        subsections=[data_directory(run, root) for run in runs],
    )


def data_directory(run: Run, root: Path) -> Section:
    """Counts, pools and skipped files of one data directory (its manifest)."""
    manifest = run.manifest
    tables = [frame_table(task_counts(manifest.get("tasks") or {}), "Tasks")]
    pools = manifest.get("pools") or {}
    if pools:
        tables.append(
            frame_table(
                pd.DataFrame(
                    [
                        {
                            "pool": name,
                            "tasks": pool.get("tasks"),
                            **{split: count for split, count in (pool.get("counts") or {}).items()},
                        }
                        for name, pool in pools.items()
                    ]
                ),
                "Pools (multi-task training sets)",
            )
        )
    skipped, converted = manifest.get("skipped") or [], manifest.get("converted") or []
    tables += skipped_tables(skipped)
    if converted:
        tables.append(frame_table(pd.DataFrame(converted), "Converted files"))
    facts = [
        ("skipped files", f"{len(skipped):,}"),
        ("converted files", f"{len(converted):,}"),
        ("seed", cell(manifest.get("seed"))),
        ("built", cell(manifest.get("created"))),
    ]
    return Section(f"Data: {relative(run.path, root)}", facts=facts, tables=tables)


def task_counts(tasks: dict[str, Any]) -> pd.DataFrame:
    """Per task: classes, held-out classes, images per split with the smallest class's count, and the source."""
    rows = []
    for name, task in tasks.items():
        counts = task.get("counts") or {}
        per_class = counts.get("per_class") or {}
        row: dict[str, Any] = {
            "task": name,
            "classes": len(task.get("classes") or []),
            "held-out classes": len(task.get("heldout_classes") or []),
        }
        for split in SPLIT_LABELS:
            smallest = min((per_class.get(split) or {}).values(), default=None)
            row[f"{SPLIT_LABELS[split]} images (fewest per class)"] = f"{cell(counts.get(split))} ({cell(smallest)})"
        rows.append({**row, "source": f"{cell(task.get('root'))} ({cell(task.get('format'))})"})
    return pd.DataFrame(rows)


def skipped_tables(skipped: list[dict[str, Any]]) -> list[Table]:
    """Skipped files counted by reason, and the first `LISTED_SKIPPED` listed by name."""
    if not skipped:
        return []
    reasons = Counter(str(entry.get("reason", "")).split(" (")[0] for entry in skipped)
    by_reason = pd.DataFrame([{"reason": reason, "files": count} for reason, count in reasons.most_common()])
    listed = pd.DataFrame(
        [{"file": entry.get("path"), "reason": entry.get("reason")} for entry in skipped[:LISTED_SKIPPED]]
    )
    rest = len(skipped) - len(listed)
    note = f"{rest:,} more are listed in the data directory's manifest.json" if rest > 0 else ""
    return [
        frame_table(by_reason, "Skipped files by reason", max_rows=len(by_reason)),
        frame_table(listed, "Skipped files", note, max_rows=LISTED_SKIPPED),
    ]
