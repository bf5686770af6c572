"""The report's opening: the answer before the provenance. The segregation index by layer with its bootstrap interval,
its permutation null (band and p-value, where the analysis drew one) and the layers that beat the null, and the test
accuracy of the analysed checkpoints (paper Fig. 1C)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import figures
from analysis.report.discover import Run
from analysis.report.elements import Figure, Section, Table, cell, drawn_figure, frame_table, interval
from analysis.report.lesioning import SCOPE_LABELS, is_random_control, read_table
from analysis.report.provenance import relative
from analysis.segregation.settings import DEFAULT_SCOPE, SIGNIFICANCE

ANSWERED = 4  # analyses drawn and listed in the opening (a study's trials: its own section aggregates the seeds)


def answer_section(analyses: list[Run], accuracies: list[Run], root: Path) -> Section | None:
    """The opening section; None when nothing was analysed or measured yet."""
    finished = [run for run in analyses if run.json("summary.json") and not read_table(run, "segregation").empty]
    shown = [run for run in finished if not is_random_control(run)][:ANSWERED]
    section = Section("The answer")
    for run in shown:
        section.figures.append(index_figure(run, root))
        section.tables.append(index_answer(run, root))
    accuracy = accuracy_answer(accuracies, shown, root)
    if accuracy is not None:
        section.tables.append(accuracy)
    if not section.tables:
        return None
    section.text.append(
        "Is each layer's segregation index above what random splits of the same classes give? The index (top-1 over "
        "all outputs) with its 95% bootstrap interval; where the analysis drew a permutation null, the mean and "
        "2.5-97.5 percentiles of the index over random partitions of the classes into pseudo-tasks, and the "
        f"one-sided p = (1 + #null ≥ index) / (1 + partitions); * marks p < {SIGNIFICANCE}. Then the intact test "
        "accuracy of each analysed checkpoint (paper Fig. 1C). Provenance, settings and every table follow."
    )
    if len(analyses) > len(shown) + sum(map(is_random_control, analyses)):
        section.text.append(f"The first {ANSWERED} analyses are shown here; the others are in the sections below.")
    return section


def index_figure(run: Run, root: Path) -> Figure:
    """The run's index by layer with its interval, null band and significance stars (headline fraction)."""
    from analysis.segregation.run import segregation_curves

    curves = segregation_curves([f"{run.path}={relative(run.path, root)}"])
    title = f"Task segregation by layer: {relative(run.path, root)}"
    return drawn_figure(
        lambda stem: figures.plot_segregation_by_layer(curves, stem, title=title),
        title,
        "Index per conv layer with its 95% bootstrap interval (band); hatched: the permutation null's 95% band; "
        f"*: p < {SIGNIFICANCE}",
    )


def index_answer(run: Run, root: Path) -> Table:
    """Per layer and pair at the headline fraction: the index [CI], and the null band and p-value when drawn."""
    summary = run.json("summary.json")
    table = read_table(run, "segregation")
    rows = table[(table["fraction"] == float(summary["fraction"])) & (table["scope"] == DEFAULT_SCOPE)]
    has_null = "p_value" in rows.columns
    frame = pd.DataFrame(
        {
            "layer": rows["layer"],
            "pair": rows["task_a"] + " vs " + rows["task_b"],
            "index [95% CI]": [interval(*values) for values in zip(rows["si"], rows["si_low"], rows["si_high"])],
            **(
                {
                    "null [95%]": [
                        interval(*values) for values in zip(rows["null_mean"], rows["null_low"], rows["null_high"])
                    ],
                    "p": [f"{cell(p)}{' *' if p < SIGNIFICANCE else ''}" for p in rows["p_value"]],
                }
                if has_null
                else {}
            ),
        }
    )
    nulls = summary.get("null_partitions") or 0
    note = (
        f"null: {nulls} random partitions ({summary.get('partition', 'sizes')}); least possible p {1 / (1 + nulls):.3f}"
        if has_null
        else "no permutation null drawn (`specialize segregation --null-partitions P`)"
    )
    return frame_table(
        frame,
        f"Segregation index, top {float(summary['fraction']):.0%} lesions: {relative(run.path, root)}",
        note,
        max_rows=len(frame),
    )


def accuracy_answer(accuracies: list[Run], analyses: list[Run], root: Path) -> Table | None:
    """Test top-1 with its interval per network and task (Fig. 1C): the test-accuracy runs, else the intact accuracy
    of the analysed checkpoints (the same measure, from the segregation analyses)."""
    tables = {relative(run.path.parent, root): read_table(run, "accuracy") for run in accuracies}
    frames = [table.assign(network=network) for network, table in tables.items() if not table.empty]
    source = "test-accuracy runs of the analysed checkpoints"
    if not frames:
        tables = {relative(run.path, root): read_table(run, "accuracy") for run in analyses}
        frames = [
            table[table["layer"] == "intact"].rename(columns={"eval_task": "task"}).assign(network=network)
            for network, table in tables.items()
            if not table.empty
        ]
        source = "the intact network of each segregation analysis"
    if not frames:
        return None
    table = pd.concat(frames, ignore_index=True)
    table = table[table["scope"] == DEFAULT_SCOPE]
    frame = pd.DataFrame(
        {
            "network": table["network"],
            "task": table["task"],
            "test top-1 [95% CI]": [
                interval(*values) for values in zip(table["accuracy"], table["accuracy_low"], table["accuracy_high"])
            ],
        }
    )
    return frame_table(
        frame,
        f"Test accuracy ({SCOPE_LABELS[DEFAULT_SCOPE]}; Fig. 1C)",
        f"from {source}; hierarchical-bootstrap intervals",
        max_rows=max(len(frame), 1),
    )
