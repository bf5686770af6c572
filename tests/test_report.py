"""`specialize report`: which sections each kind of directory gets, their figures and tables, the HTML file, bad
input, the packaged template, and the page in a real browser (Debian's chromium, headless). Run directories come
from `helpers_report` (real schemas, made-up numbers, no training); `test_demo` opens the real demo's page."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from helpers_report import (
    make_demo_dir,
    make_study_dir,
    open_in_browser,
    write_analysis,
    write_segregation,
    write_train,
)
from helpers_train import ROOT

from analysis.report.build import report_sections, write_report
from analysis.report.discover import discover_runs
from analysis.report.elements import MAX_ROWS, Section, cell, frame_table, interval, settings_table
from analysis.report.study import pairs_by_layer
from specialize.cli import main

DEMO_SECTIONS = [
    "The answer",
    "What was run",
    "Data",
    "Training",
    "Intact accuracy",
    "Lesion sweep",
    "Segregation",
    "Decoding",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo directory with the random-task control, an unfinished training run and a decoding analysis."""
    demo = make_demo_dir(tmp_path_factory.mktemp("report"))
    write_train(demo / "train" / "unfinished", "tiny_face", demo / "data", finished=False, name="unfinished")
    write_analysis(demo / "decoding", "decoding")
    return demo


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_study_dir(tmp_path_factory.mktemp("report_study"))


def sections_of(directory: Path) -> list[Section]:
    return report_sections(discover_runs(directory), directory)


def find(sections: list[Section], title: str) -> Section:
    [found] = [section for top in sections for section in top.walk() if section.title == title]
    return found


def table(section: Section, title: str):
    [found] = [table for table in section.tables if table.title == title]
    return found


def column(found, name: str) -> list[str]:
    return [row[found.columns.index(name)] for row in found.rows]


def test_demo_gets_every_stage_with_the_control_beside_its_analysis(demo: Path) -> None:
    sections = sections_of(demo)
    assert [section.title for section in sections] == DEMO_SECTIONS
    [analysis] = find(sections, "Segregation").subsections  # the control is paired, not a second analysis
    assert analysis.title == "face vs object: segregation"
    assert dict(analysis.facts)["random-task control"] == "segregation_random"
    assert [sub.title for sub in analysis.subsections] == [
        "Segregation by layer",
        "Drop heatmap",
        "Normalised performance",
    ]
    by_layer = table(analysis.subsections[0], "Segregation index [95% CI], top-1 over all outputs")
    assert by_layer.columns == ["layer", "network: face vs object", "random tasks: pseudo1 vs pseudo2"]
    for name, directory in (
        ("network: face vs object", "segregation"),
        ("random tasks: pseudo1 vs pseudo2", "segregation_random"),
    ):
        stored = pd.read_parquet(demo / directory / "segregation.parquet").query("scope == 'all_outputs'")
        assert column(by_layer, name) == [
            interval(*row) for row in zip(stored["si"], stored["si_low"], stored["si_high"])
        ]
    figure = analysis.subsections[0].figures[0]  # drawn with both curves, not the analysis' own one-curve figure
    assert "random-task control" in figure.title
    assert figure.png != (demo / "segregation" / "figures" / "segregation_by_layer.png").read_bytes()


def test_the_report_opens_with_the_index_its_null_and_the_test_accuracy(demo: Path) -> None:
    answer = sections_of(demo)[0]
    assert answer.title == "The answer" and len(answer.figures) == 1  # the analysis, not its control
    index = table(answer, "Segregation index, top 20% lesions: segregation")
    stored = pd.read_parquet(demo / "segregation" / "segregation.parquet").query("scope == 'all_outputs'")
    assert column(index, "index [95% CI]") == [interval(*row) for row in zip(stored.si, stored.si_low, stored.si_high)]
    assert column(index, "null [95%]") == [
        interval(*row) for row in zip(stored.null_mean, stored.null_low, stored.null_high)
    ]
    assert column(index, "p") == [f"{cell(p)}{' *' if p < 0.05 else ''}" for p in stored.p_value]
    assert "5 random partitions (sizes); least possible p 0.167" in index.note
    accuracy = table(answer, "Test accuracy (top-1 over all outputs; Fig. 1C)")
    intact = pd.read_parquet(demo / "segregation" / "accuracy.parquet").query(
        "layer == 'intact' and scope == 'all_outputs'"
    )
    assert column(accuracy, "task") == list(intact.eval_task)
    assert column(accuracy, "test top-1 [95% CI]") == [
        interval(*row) for row in zip(intact.accuracy, intact.accuracy_low, intact.accuracy_high)
    ]


def test_demo_training_data_and_sweep_sections(demo: Path) -> None:
    sections = sections_of(demo)
    training = find(sections, "Training").subsections
    assert [run.title for run in training] == [
        "tiny_face: train/tiny_face",
        "tiny_face_object: train/tiny_face_object",
        "tiny_object: train/tiny_object",
        "unfinished: train/unfinished",
    ]
    assert all(len(run.figures) == 1 for run in training)  # curves, also of the unfinished run's epochs so far
    assert any("Unfinished" in text for text in training[-1].text) and not training[-1].tables
    intact = table(find(sections, "Intact accuracy"), "Validation top-1 per task and network")
    assert sorted(zip(column(intact, "network"), column(intact, "kind"))) == [
        ("tiny_face", "single-task"),
        ("tiny_face_object", "dual-task"),
        ("tiny_face_object", "dual-task"),
        ("tiny_object", "single-task"),
    ]  # the unfinished run has no final metrics
    data = find(sections, "Data: data")
    assert dict(data.facts)["skipped files"] == "3"
    assert table(data, "Skipped files by reason").rows == [["empty file", "2"], ["cannot decode", "1"]]
    sweep = find(sections, "Lesion sweep: lesion")
    assert len(sweep.figures) == 1
    summary = table(sweep, "Single-filter lesions per layer and task")
    losses = pd.read_parquet(demo / "lesion" / "filter_losses.parquet")
    increase = (losses["loss"] - losses["intact_loss"]).groupby([losses["layer"], losses["task"]])
    assert len(summary.rows) == 4  # 2 layers x 2 tasks, each read back from the sweep's table
    for layer, task, filters, largest in zip(
        column(summary, "layer"),
        column(summary, "task"),
        column(summary, "filters"),
        column(summary, "largest loss increase"),
    ):
        assert filters == cell(len(increase.get_group((layer, task))))
        assert largest == cell(increase.get_group((layer, task)).max())


def test_other_analysis_kinds_get_generic_sections(demo: Path) -> None:
    [decoding] = find(sections_of(demo), "Decoding").subsections
    assert dict(decoding.facts) == {
        "headline_layer": "fc7",
        "folds": "5",
    }  # plain summary values; lists of rows are tables
    assert [found.title for found in decoding.tables] == ["decoding.parquet", "decoding_folds.parquet"]
    assert len(decoding.tables[0].rows) == 4  # small: listed, each accuracy as stored
    stored = pd.read_parquet(demo / "decoding" / "decoding.parquet")
    assert column(decoding.tables[0], "accuracy") == [cell(value) for value in stored["accuracy"]]
    assert len(set(stored["accuracy"])) > 1  # a cell mixed up with another row's would show
    assert "60 rows: summarised" in decoding.tables[1].note and len(decoding.tables[1].rows) == 3  # big: per column
    assert sorted(figure.caption for figure in decoding.figures) == [
        "decoding/conv5_3_face.png",
        "decoding/figures/decoding_by_layer.png",
    ]


def test_study_gets_its_trials_seed_aggregation_and_outside_data(study: Path) -> None:
    sections = sections_of(study)
    data = str((study.parent / "data").resolve())
    assert [section.title for section in sections] == [
        "The answer",
        "What was run",
        "Data",
        "Study tiny",
        "Training",
        "Intact accuracy",
        "Lesion sweep",
        "Segregation",
    ]
    assert find(sections, "Data").subsections[0].title == f"Data: {data}"
    assert dict(find(sections, "Study tiny").facts)["trials finished"] == "3 of 4; missing: face-seed1"
    aggregation = find(sections, "Seed aggregation")
    assert aggregation.figures[0].png == (study / "aggregate" / "figures" / "segregation_by_pair.png").read_bytes()
    pairs = pd.read_parquet(study / "aggregate" / "pairs.parquet").query("condition == 'network'")
    by_layer = aggregation.tables[0]
    assert by_layer.columns == ["layer", "face_object, network", "face_object, random tasks"]
    assert column(by_layer, "face_object, network") == [
        f"{interval(row.mean_si, row.low, row.high)} ({row.n_seeds})" for row in pairs.itertuples()
    ]
    tests = pd.read_parquet(study / "aggregate" / "paired_tests.parquet")
    paired = aggregation.tables[1]
    assert column(paired, "null") == ["null partitions"] * len(tests)  # each seed's null mean, not its control
    assert column(paired, "sign-flip p") == [cell(p) for p in tests["p_sign_flip"]]
    assert set(tests["p_sign_flip"]) <= {0.25, 0.5, 0.75, 1.0}  # two seeds: 2^2 sign patterns
    intact = find(sections, "Intact accuracy").figures[0]
    assert intact.png == (study / "aggregate" / "figures" / "intact_accuracy.png").read_bytes()
    assert len(find(sections, "Segregation").subsections) == 2


@pytest.mark.parametrize(
    "directory, expected",
    [
        ("train/tiny_face", ["What was run", "Data", "Training", "Intact accuracy"]),
        ("lesion", ["What was run", "Data", "Lesion sweep"]),
        ("segregation", ["The answer", "What was run", "Data", "Segregation"]),
        ("segregation_random", ["What was run", "Data", "Segregation"]),
        ("data", ["What was run", "Data"]),
        ("decoding", ["What was run", "Decoding"]),
    ],
)
def test_single_run_directories(demo: Path, directory: str, expected: list[str]) -> None:
    sections = sections_of(demo / directory)
    assert [section.title for section in sections] == expected


def test_an_analysis_alone_shows_its_own_figure(demo: Path) -> None:
    [analysis] = find(sections_of(demo / "segregation"), "Segregation").subsections
    assert dict(analysis.facts)["random-task control"] == "none found beside this analysis"
    figure = find([analysis], "Segregation by layer").figures[0]
    assert figure.png == (demo / "segregation" / "figures" / "segregation_by_layer.png").read_bytes()


def test_the_page_is_self_contained_and_holds_every_figure_and_table(demo: Path, tmp_path: Path) -> None:
    path = write_report(demo, tmp_path / "page.html", title="Faces <and> objects")
    html = path.read_text(encoding="utf-8")
    sections = sections_of(demo)
    figures = [figure for top in sections for section in top.walk() for figure in section.figures]
    tables = [found for top in sections for section in top.walk() for found in section.tables]
    sources = re.findall(r'<img src="([^"]*)"', html)
    assert len(sources) == len(figures) > 10
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    assert html.count("<table>") == len(tables)
    assert not re.search(r"<script|<link|@import|url\(|https?://", html)
    assert "<title>Faces &lt;and&gt; objects</title>" in html
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file, renamed when complete


def test_command_writes_into_an_out_directory_and_prints_the_path(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["report", str(demo / "segregation"), "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {tmp_path / 'report.html'}"
    assert "face vs object: segregation" in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root / "missing", "is not a directory"),
        (lambda root: (root / "file.txt").write_text("x") and root / "file.txt", "is not a directory"),
        (lambda root: root, "holds no run directory"),
        (lambda root: (root / "manifest.json").write_text('{"created": "today"}') and root, "holds no run directory"),
        (lambda root: (root / "manifest.json").write_text("{not json") and root, "manifest.json is not valid JSON"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, make, message: str
) -> None:
    target = make(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main(["report", str(target), "--out", str(tmp_path / "out" / "report.html")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("specialize report: error: ") and message in error
    assert sorted(tmp_path.rglob("*")) == before


def test_file_names_in_any_encoding(demo: Path, tmp_path: Path) -> None:
    name = os.fsdecode(b"run-\xff")  # not UTF-8: a surrogate escape in Python
    write_train(tmp_path / name, "tiny_face", demo / "data")
    html = write_report(tmp_path).read_bytes().decode("utf-8")  # the page is valid UTF-8
    assert "run-\\xff" in html


def test_the_across_seed_table_shows_the_three_level_bootstrap_when_the_study_asked_for_it() -> None:
    pairs = pd.DataFrame(
        {
            "pair": ["face_object"] * 2,
            "condition": ["network", "random tasks"],
            "layer": ["conv5_3"] * 2,
            "layer_index": [13, 13],
            "mean_si": [0.5, 0.1],
            "low": [0.4, 0.0],
            "high": [0.6, 0.2],
            "n_seeds": [3, 3],
        }
    )
    assert pairs_by_layer(pairs).loc[0, "face_object, network"] == "0.500 [0.400, 0.600] (3)"
    booted = pairs_by_layer(pairs.assign(boot_low=[0.42, 0.03], boot_high=[0.57, 0.18]))
    assert booted.loc[0, "face_object, network"] == "0.500 [0.400, 0.600] (3); bootstrap [0.420, 0.570]"
    assert booted.loc[0, "face_object, random tasks"] == "0.100 [0.000, 0.200] (3); bootstrap [0.03, 0.180]"


def test_cells_are_rounded_and_big_tables_summarised() -> None:
    assert [cell(value) for value in (0.123456, 1234567, float("nan"), 0.0625, True, 2.5e-5, None, 250.25, [], {})] == [
        "0.123",
        "1,234,567",
        "–",
        "0.0625",
        "yes",
        "2.50e-05",
        "–",
        "250.2",
        "–",
        "–",
    ]
    frame = pd.DataFrame({"layer": ["conv1_1"], "si": [0.5], "si_low": [0.1], "si_high": [0.9]})
    merged = frame_table(frame, "index")
    assert merged.columns == ["layer", "si [95% CI]"] and merged.rows == [["conv1_1", "0.500 [0.100, 0.900]"]]
    assert merged.numeric == [False, True]
    assert cell(list(range(20))) == "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, … (20 in all)"
    big = frame_table(pd.DataFrame({"image": range(MAX_ROWS + 1), "correct": True}), "predictions")
    assert big.rows[0][:5] == ["image", "int64", "41", "41", "0"] and len(big.rows) == 2
    assert big.note.startswith(f"{MAX_ROWS + 1} rows: summarised per column")


ANALYSIS_HEADINGS = ["Segregation by layer", "Drop heatmap", "Normalised performance"]
BROWSER_HEADINGS = {
    "demo": [
        "Contents",
        *DEMO_SECTIONS,
        "Configs and manifests",
        "Data: data",
        "Lesion sweep: lesion",
        "tiny_face_object: train/tiny_face_object",
        "face vs object: segregation",
        *ANALYSIS_HEADINGS,
        "decoding",
    ],
    "study": [
        "Contents",
        "The answer",
        "What was run",
        "Data",
        "Study tiny",
        "Seed aggregation",
        "Training",
        "Intact accuracy",
        "Lesion sweep",
        "Segregation",
        "face vs object: trials/face_object-seed1/segregation",
        *ANALYSIS_HEADINGS,
    ],
}


@pytest.mark.chromium
@pytest.mark.parametrize("name", ["demo", "study"])
def test_report_renders_in_a_real_browser(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> None:
    directory = request.getfixturevalue(name)
    path = write_report(directory, tmp_path / "report.html")
    sections = sections_of(directory)
    shown = open_in_browser(path, tmp_path / "report.png")
    assert set(BROWSER_HEADINGS[name]) <= set(shown["headings"])
    everything = [section for top in sections for section in top.walk()]
    assert {section.title for section in everything} <= set(shown["headings"])
    figures = [figure for section in everything for figure in section.figures]
    assert len(shown["images"]) == len(figures)
    assert all(complete and width > 0 and in_full for complete, width, in_full in shown["images"])
    tables = [found for section in everything for found in section.tables]
    assert shown["tables"] == [[found.title, len(found.rows)] for found in tables]
    assert shown["requests"] == [path.resolve().as_uri()]  # the page itself; nothing else, nothing from the network
    assert not shown["failed"] and not shown["console_errors"]
    assert (tmp_path / "report.png").stat().st_size > 100_000
    print(f"screenshot: {tmp_path / 'report.png'}")


def test_big_settings_are_counted_not_listed() -> None:
    manifest = {
        "seed": 0,
        "tasks": {"face": {"root": "/faces", "counts": {"per_class": {"train": {f"id{i}": 247 for i in range(1714)}}}}},
    }
    shown = settings_table(manifest, "manifest.json")
    assert shown.rows == [
        ["seed", "0"],
        ["tasks.face.root", "/faces"],
        ["tasks.face.counts.per_class.train", "1,714 settings"],
    ]
    assert "counted, not listed" in shown.note
    assert len(settings_table({"a": {"b": 1}}, "config.json").rows) == 1 and not settings_table({"a": 1}, "c").note


def test_the_template_is_installed_with_the_package(tmp_path: Path) -> None:
    """A wheel built from the project's files holds the report's template (setuptools package data)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("common", "specialize", "data_pipeline", "lightning_modules", "sweeps", "analysis"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "wheel"),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = (tmp_path / "wheel").glob("*.whl")
    assert "analysis/report/templates/report.html.j2" in zipfile.ZipFile(wheel).namelist()


def test_an_index_undefined_by_a_task_at_zero_is_explained(demo: Path, tmp_path: Path) -> None:
    sweep = demo / "lesion"
    write_segregation(tmp_path / "segregation", sweep, demo / "data", ("face", "object"), failed=["face"])
    [analysis] = find(sections_of(tmp_path), "Segregation").subsections
    assert any("no face test image right" in text for text in analysis.text)
    assert set(
        column(
            table(analysis.subsections[0], "Segregation index [95% CI], top-1 over all outputs"),
            "network: face vs object",
        )
    ) == {"–"}
    [analysis] = find(sections_of(demo / "segregation"), "Segregation").subsections
    assert not any("test image right" in text for text in analysis.text)


def test_unreliable_top_sets_are_warned_about() -> None:
    from analysis.report.lesioning import ranking_checks_section

    reliability = pd.DataFrame(
        {
            "layer": ["conv1_1", "conv5_3"],
            "task": "face",
            "top": [13, 102],
            "classes_per_half": 5,
            "jaccard": [0.15, 0.9],
            "chance_jaccard": [0.117, 0.111],
            "spearman": [0.1, 0.95],
        }
    )
    overlap = pd.DataFrame(
        {"layer": ["conv1_1"], "task_a": "face", "task_b": "object", "top": 13, "jaccard": 0.1, "chance_jaccard": 0.12}
    )
    section = ranking_checks_section(reliability, overlap, 0.2)
    [warning] = section.text
    assert "conv1_1 (face)" in warning and "conv5_3" not in warning
    assert len(section.tables) == 2
    assert ranking_checks_section(reliability.iloc[1:], overlap, 0.2).text == []
    assert ranking_checks_section(pd.DataFrame(), pd.DataFrame(), 0.2) is None
