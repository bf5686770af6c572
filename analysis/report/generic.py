"""Sections for any other kind of run (decoding, RSA, feature visualisation, and kinds yet to come), built from
what every analysis writes: summary.json's plain values, its Parquet tables (summarised when big) and its PNG
figures (in the directory and in figures/). A new analysis appears in the report without code here."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.report.discover import Run
from analysis.report.elements import Section, cell, file_figure, frame_table, humanise
from analysis.report.provenance import relative
from common.io import readable_parquet
from common.output_dir import flatten

TITLES = {"decoding": "Decoding", "rsa": "Representational similarity (RSA)", "visualize": "Feature visualisation"}
OPEN_RUNS = 2
LISTED_VALUES = 10  # summary lists longer than this are left to the tables


def generic_section(kind: str, runs: list[Run], root: Path) -> Section | None:
    """A section for the runs of one kind, one subsection per run with anything to show; None when none has."""
    subsections = [section for run in runs if (section := generic_run(run, root, len(runs) > OPEN_RUNS))]
    if not subsections:
        return None
    return Section(
        TITLES.get(kind, humanise(kind)),
        text=[f"Results of the `{kind}` runs: their summary values, tables and figures."],
        subsections=subsections,
    )


def generic_run(run: Run, root: Path, collapsed: bool) -> Section | None:
    """A run's summary values, tables and figures; None when it has none of them."""
    facts = [(key, cell(value)) for key, value in flatten(run.json("summary.json")).items() if plain(value)]
    tables = [frame_table(pd.read_parquet(path), path.name) for path in parquet_files(run.path)]
    pngs = sorted(run.path.glob("*.png")) + sorted((run.path / "figures").glob("*.png"))
    figures = [file_figure(path, humanise(path.stem), relative(path, root)) for path in pngs]
    if not (facts or tables or figures):
        return None
    return Section(relative(run.path, root), facts=facts, tables=tables, figures=figures, collapsed=collapsed)


def parquet_files(directory: Path) -> list[Path]:
    """The complete Parquet tables of a directory, shortest first (summary tables before per-item ones)."""
    import pyarrow.parquet as pq

    tables = [path for path in sorted(directory.glob("*.parquet")) if readable_parquet(path)]
    return sorted(tables, key=lambda path: pq.read_metadata(path).num_rows)


def plain(value: object) -> bool:
    """Whether a summary value reads well as one line: a scalar or a short list of scalars."""
    if isinstance(value, list):
        return len(value) <= LISTED_VALUES and all(not isinstance(item, (list, dict)) for item in value)
    return not isinstance(value, dict)
