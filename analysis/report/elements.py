"""What a report page is made of: sections holding facts, figures (PNG embedded as base64) and tables.

Tables come from DataFrames with sensible rounding (3 decimals, thousands separators, intervals as
"value [low, high]"); a table longer than `MAX_ROWS` is summarised column by column instead of dumped.
Figures are read from a run's PNG files, or drawn from its tables by the figure functions of `analysis`
(which write PNG and SVG files: they draw into a temporary directory and the PNG is read back).
"""

from __future__ import annotations

import base64
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.output_dir import flatten

MAX_ROWS = 40  # longer tables are summarised per column
MISSING = "–"
NUMBER_TEXT = r"^([-+]?[\d.,]+(e[-+]\d+)?|–)( \[.*\])?( \(\d+\))?$"  # '0.5', '0.5 [0.1, 0.9]', '0.5 [0.1, 0.9] (3)'
LISTED_ITEMS = 16  # longer lists in a cell show their first items and their length
MIN_WIDTH = 640  # CSS pixels of a figure, unless the PNG is narrower


@dataclass(frozen=True)
class Figure:
    """One figure: its title, PNG bytes and a caption saying what it shows and where it came from."""

    title: str
    png: bytes
    caption: str = ""

    @property
    def width(self) -> int:
        """Display width in CSS pixels: half the PNG's pixel width (figures are drawn at 150 dpi), so that text in
        figures matches the page, but at least `MIN_WIDTH` (or the PNG's own width); narrow windows shrink it."""
        pixels = int.from_bytes(self.png[16:20], "big")  # the PNG header's width field
        return max(pixels // 2, min(pixels, MIN_WIDTH))

    @property
    def data_uri(self) -> str:
        """The PNG as a data: URI, so that the page needs no other file."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class Table:
    """A table ready to render: header, rows of formatted cells, which columns are numeric, and a note."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    note: str = ""


@dataclass
class Section:
    """A part of the page: a heading, short text, facts (label -> value), figures, tables and subsections.

    A `collapsed` section renders closed (HTML <details>), for per-run detail that a long study would repeat.
    """

    title: str
    text: list[str] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    subsections: list[Section] = field(default_factory=list)
    collapsed: bool = False
    anchor: str = ""

    def walk(self) -> Iterable[Section]:
        """This section and all its subsections, depth first."""
        yield self
        for subsection in self.subsections:
            yield from subsection.walk()


# ----------------------------------------------------------------------------------------------- cells


def display_text(text: str) -> str:
    """Text that can be written as UTF-8: bytes of file names in other encodings (surrogate escapes, as Python reads
    them) shown as \\xNN."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no byte stands for
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def display_json(value: Any) -> Any:
    """A JSON value with every string (and key) passed through `display_text`."""
    if isinstance(value, str):
        return display_text(value)
    if isinstance(value, dict):
        return {display_text(str(key)): display_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [display_json(item) for item in value]
    return value


def format_number(value: float) -> str:
    """3 decimals (3 significant digits below 0.1); fewer for large magnitudes (with thousands separators);
    scientific below 0.001."""
    if not math.isfinite(value):
        return MISSING if math.isnan(value) else str(value)
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if 0 < magnitude < 0.001:
        return f"{value:.2e}"
    if 0 < magnitude < 0.1:
        return f"{value:.3g}"
    return f"{value:.3f}"


def cell(value: Any) -> str:
    """A table cell: missing values (and empty lists) as a dash, booleans as yes/no, integers with separators, floats
    rounded, long lists cut."""
    if value is None or value is pd.NA or value is pd.NaT:
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return format_number(float(value))
    if isinstance(value, (list, tuple, np.ndarray, dict)) and len(value) == 0:
        return MISSING
    if isinstance(value, (list, tuple, np.ndarray)):
        shown = ", ".join(cell(item) for item in value[:LISTED_ITEMS])
        return shown if len(value) <= LISTED_ITEMS else f"{shown}, … ({len(value):,} in all)"
    if isinstance(value, dict):
        return ", ".join(f"{key}: {cell(item)}" for key, item in value.items())
    return display_text(os.fsdecode(value) if isinstance(value, bytes) else str(value))


def interval(value: Any, low: Any, high: Any) -> str:
    """'value [low, high]', or the value alone when the interval is missing."""
    text = cell(value)
    if any(pd.isna(bound) for bound in (low, high)):
        return text
    return f"{text} [{cell(low)}, {cell(high)}]"


def merge_intervals(frame: pd.DataFrame, label: str = "95% CI") -> pd.DataFrame:
    """Each column X with X_low and X_high beside it becomes one text column 'X [label]': 'value [low, high]'."""
    merged = frame.copy()
    for name in list(frame.columns):
        low, high = f"{name}_low", f"{name}_high"
        if low in frame.columns and high in frame.columns:
            merged[name] = [interval(*values) for values in zip(frame[name], frame[low], frame[high])]
            merged = merged.drop(columns=[low, high]).rename(columns={name: f"{name} [{label}]"})
    return merged


def is_numeric(series: pd.Series) -> bool:
    """Whether a column holds numbers (right-aligned), or text that formats numbers ('0.5 [0.1, 0.9]')."""
    if pd.api.types.is_bool_dtype(series):
        return False
    if pd.api.types.is_numeric_dtype(series):
        return True
    values = series.dropna().astype(str)
    return not values.empty and bool(values.str.match(NUMBER_TEXT).all())


# ---------------------------------------------------------------------------------------------- tables


def frame_table(frame: pd.DataFrame, title: str, note: str = "", max_rows: int = MAX_ROWS) -> Table:
    """A DataFrame as a table (intervals merged); summarised per column when longer than `max_rows`."""
    if len(frame) > max_rows:
        summary_note = f"{len(frame):,} rows: summarised per column, not listed"
        return frame_table(column_summary(frame), title, f"{summary_note}. {note}".strip(), max_rows=len(frame.columns))
    shown = merge_intervals(frame)
    rows = [[cell(value) for value in row] for row in shown.itertuples(index=False, name=None)]
    return Table(
        title,
        [str(column) for column in shown.columns],
        rows,
        [is_numeric(shown[column]) for column in shown.columns],
        note,
    )


def column_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per column of a big table: type, values present, distinct values, and the range or examples."""
    rows = []
    for name in frame.columns:
        series = frame[name]
        numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        distinct = series.nunique(dropna=True) if not series.map(type).isin([list, np.ndarray, dict]).any() else None
        rows.append(
            {
                "column": str(name),
                "type": str(series.dtype),
                "values": int(series.notna().sum()),
                "distinct": distinct,
                **{name: cell(getattr(series, name)()) if numeric else MISSING for name in ("min", "mean", "max")},
                "examples": None if numeric else ", ".join(cell(v) for v in series.dropna().unique()[:4]),
            }
        )
    return pd.DataFrame(rows)


def settings_table(settings: dict[str, Any], title: str, max_rows: int = MAX_ROWS) -> Table:
    """Nested settings as dotted setting -> value rows. When there are more than `max_rows`, the deepest levels are
    counted instead of listed ('tasks.face.counts.per_class: 3 settings') until the table fits or only the top
    level is left."""
    flat = {str(key): value for key, value in flatten(settings).items()}
    depth = max((key.count(".") + 1 for key in flat), default=1)
    note = ""
    while len(flat) > max_rows and depth > 1:
        depth -= 1
        flat = collapse(flat, depth)
        note = f"settings deeper than {depth} levels are counted, not listed ({title} holds them)"
    return Table(title, ["setting", "value"], [[key, cell(value)] for key, value in flat.items()], [False, False], note)


def collapse(flat: dict[str, Any], depth: int) -> dict[str, Any]:
    """Dotted settings cut to `depth` levels: the settings under a longer key are counted under its prefix."""
    collapsed: dict[str, Any] = {}
    for key, value in flat.items():
        prefix = ".".join(key.split(".")[:depth])
        if prefix == key:
            collapsed[key] = value
        else:
            count = collapsed.get(prefix, Counted(0)).count
            collapsed[prefix] = Counted(count + (value.count if isinstance(value, Counted) else 1))
    return collapsed


@dataclass(frozen=True)
class Counted:
    """A number of settings shown as one row."""

    count: int

    def __str__(self) -> str:
        return f"{self.count:,} settings"


# --------------------------------------------------------------------------------------------- figures


def file_figure(path: Path, title: str, caption: str = "") -> Figure:
    """A figure from a PNG file."""
    return Figure(title, path.read_bytes(), caption)


def drawn_figure(draw: Callable[[Path], Sequence[Path]], title: str, caption: str = "") -> Figure:
    """A figure drawn by `draw(stem)`, a figure function of `analysis` that writes stem.png (and more)."""
    with tempfile.TemporaryDirectory(prefix="specialize-report-") as tmp:
        written = draw(Path(tmp) / "figure")
        png = next(Path(path) for path in written if Path(path).suffix == ".png")
        return Figure(title, png.read_bytes(), caption)


def figure_or_drawn(path: Path | None, draw: Callable[[Path], Sequence[Path]], title: str, caption: str = "") -> Figure:
    """The run's own PNG when there is one, else the same figure drawn from the run's tables."""
    if path is not None and path.is_file():
        return file_figure(path, title, caption)
    return drawn_figure(draw, title, f"{caption} (drawn by the report from the tables)".strip())


def humanise(name: str) -> str:
    """'normalised_performance_conv5_3' -> 'Normalised performance conv5_3' (layer names kept)."""
    words = re.split(r"_(?![0-9])", name)
    text = " ".join(words)
    return text[:1].upper() + text[1:]
