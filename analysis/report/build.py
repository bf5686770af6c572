"""Assemble a report: the answer first (the index by layer with its null and significance, test accuracy:
`analysis.report.answer`), then the sections of every kind of run found, in the order of the study (what was run, data,
the study's seed aggregation, training, intact accuracy, lesion sweeps, segregation, other analyses), rendered
with jinja2 into one self-contained HTML file, written atomically."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from analysis.report.answer import answer_section
from analysis.report.discover import Run, discover_runs, runs_of
from analysis.report.elements import Section, display_text
from analysis.report.generic import generic_section
from analysis.report.lesioning import lesion_section, segregation_section
from analysis.report.provenance import data_section, what_was_run
from analysis.report.study import intact_figure, study_section
from analysis.report.training import intact_section, training_section
from common.console import hidden
from common.io import atomic_path, remove_stale_temporaries
from common.manifest import build_manifest

REPORT_NAME = "report.html"
SPECIFIC_KINDS = ("data", "study", "train", "lesion_sweep", "segregation")  # the rest get generic sections


def report_sections(runs: list[Run], root: Path, progress: bool = False) -> list[Section]:
    """Every section the runs call for, each with a unique anchor; `progress` shows a bar over the runs."""
    from tqdm.auto import tqdm

    studies, trains, data = runs_of(runs, "study"), runs_of(runs, "train"), runs_of(runs, "data")
    sweeps, analyses = runs_of(runs, "lesion_sweep"), runs_of(runs, "segregation")
    others = [runs_of(runs, kind) for kind in dict.fromkeys(run.kind for run in runs if run.kind not in SPECIFIC_KINDS)]
    parts: list[tuple[list[Run], Callable[[], list[Section | None]]]] = [  # the runs each part covers, its sections
        (data, lambda: [data_section(data, root)]),
        (studies, lambda: [study_section(run) for run in studies]),
        (trains, lambda: [training_section(trains, root), intact_section(trains, intact_figure(studies))]),
        (sweeps, lambda: [lesion_section(sweeps, analyses, root)]),
        (analyses, lambda: [segregation_section(analyses, root)]),
        *[(kind, lambda kind=kind: [generic_section(kind[0].kind, kind, root)]) for kind in others],
    ]
    sections: list[Section | None] = [answer_section(analyses, runs_of(runs, "test_accuracy"), root)]
    sections.append(what_was_run(runs, root))
    with tqdm(total=len(runs), desc="report", unit="run", disable=hidden(progress)) as bar:
        for covered, build in parts:
            if covered:
                sections += build()
            bar.update(len(covered))
    shown = [section for section in sections if section is not None]
    assign_anchors(shown)
    return shown


def assign_anchors(sections: list[Section]) -> None:
    """Give every section a unique anchor derived from its title (for the table of contents)."""
    used: set[str] = set()
    for section in (item for top in sections for item in top.walk()):
        base = re.sub(r"[^a-z0-9]+", "-", section.title.lower()).strip("-") or "section"
        anchor, number = base, 1
        while anchor in used:
            number += 1
            anchor = f"{base}-{number}"
        used.add(anchor)
        section.anchor = anchor


def report_path(root: Path, out: str | os.PathLike | None) -> Path:
    """Where the report goes: `out`, `out`/report.html when `out` is a directory, else root/report.html."""
    if out is None:
        return root / REPORT_NAME
    out = Path(out)
    return out / REPORT_NAME if out.is_dir() else out


def default_title(runs: list[Run], root: Path) -> str:
    """'Study NAME' for a study, else the directory's name."""
    study = next((run for run in runs if run.kind == "study" and run.path == root), None)
    if study is not None:
        return f"Study {study.config.get('name', root.resolve().name)}"
    return f"specialize: {os.fsdecode(root.resolve().name)}"


def render(title: str, sections: list[Section], about: dict) -> str:
    """The HTML page (templates/report.html.j2): everything inline, nothing fetched."""
    import jinja2
    from markupsafe import Markup

    def finalize(value: object) -> object:  # rendered macros are Markup whose values were cleaned already
        return display_text(value) if isinstance(value, str) and not isinstance(value, Markup) else value

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("analysis.report", "templates"),
        autoescape=True,
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    return environment.get_template("report.html.j2").render(title=title, sections=sections, about=about)


def write_report(
    directory: str | os.PathLike, out: str | os.PathLike | None = None, title: str | None = None, progress: bool = False
) -> Path:
    """Write the report of a run, demo or study directory; returns its path. UserError on bad input, and then
    nothing is written. `progress` shows a bar over the runs."""
    root = Path(directory)
    runs = discover_runs(root)
    path = report_path(root, out)
    sections = report_sections(runs, root, progress)
    about = build_manifest("report", source=os.fsdecode(root.resolve()), runs=len(runs))
    html = render(title or default_title(runs, root), sections, about)
    remove_stale_temporaries(path)  # left by a killed run
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path
