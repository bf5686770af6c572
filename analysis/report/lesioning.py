"""Lesion sweeps (per-filter losses, summarised per layer, and which filters each task ranks first) and the
segregation analyses (index by layer with its interval beside the random-task control, drop heat map,
normalised performance, intact test accuracy)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import figures
from analysis.report.discover import Run
from analysis.report.elements import (
    Section,
    Table,
    cell,
    display_text,
    drawn_figure,
    figure_or_drawn,
    file_figure,
    frame_table,
    interval,
)
from analysis.report.provenance import relative
from analysis.segregation.reliability import RELIABILITY_WARNING, unreliable
from analysis.segregation.settings import DEFAULT_SCOPE, SCOPES, SegregationSettings
from common.io import readable_parquet
from sweeps.ranking import top_filters

OPEN_RUNS = 2  # more analyses than this (a study's trials) are shown closed
SCOPE_LABELS = {"all_outputs": "top-1 over all outputs", "task_outputs": "top-1 over the task's own outputs"}
TOP_LISTED = 5  # top filters listed per layer and task


def read_table(run: Run, name: str) -> pd.DataFrame:
    """A run's Parquet table, or an empty frame when it is missing or incomplete."""
    path = run.path / f"{name}.parquet"
    return pd.read_parquet(path) if readable_parquet(path) else pd.DataFrame()


def sweep_of(run: Run) -> str | None:
    """The lesion sweep a segregation analysis used (resolved path, as displayed), as recorded in its manifest."""
    sweep = run.manifest.get("sweep")
    return display_text(str(Path(sweep).resolve())) if isinstance(sweep, str) else None


def is_random_control(run: Run) -> bool:
    """Whether a segregation analysis is the random-task control (`--random-tasks`)."""
    return bool(run.json("summary.json").get("random_tasks") or run.config.get("random_tasks"))


# ------------------------------------------------------------------------------------------ lesion sweeps


def lesion_section(sweeps: list[Run], analyses: list[Run], root: Path) -> Section:
    """One subsection per lesion sweep; filters are marked at the headline fraction of the sweep's analysis."""
    fractions = {sweep_of(run): run.json("summary.json").get("fraction") for run in analyses}
    return Section(
        "Lesion sweep",
        text=[
            "Each filter of each swept layer lesioned alone (its output map set to zero) and the loss measured on a "
            "fixed set of training images of each task; filters are ranked per task by that loss, highest first."
        ],
        subsections=[
            sweep_run(
                run,
                root,
                fractions.get(display_text(str(run.path.resolve()))) or SegregationSettings().fraction,
                collapsed=len(sweeps) > OPEN_RUNS,
            )
            for run in sweeps
        ],
    )


def sweep_run(run: Run, root: Path, fraction: float, collapsed: bool) -> Section:
    """A sweep's settings, the intact network on its images, a per-layer summary and the filter scatter plot."""
    losses, ranking, manifest = read_table(run, "filter_losses"), read_table(run, "ranking"), run.manifest
    section = Section(
        f"Lesion sweep: {relative(run.path, root)}",
        collapsed=collapsed,
        facts=[
            ("checkpoint", relative(Path(str(manifest.get("checkpoint", ""))), root)),
            (
                "images per task",
                f"{cell(manifest.get('images_per_task'))} ({cell(manifest.get('images_split'))} split, "
                f"{cell(manifest.get('transform'))} transform, {cell(manifest.get('resolution'))} px)",
            ),
            ("ranking", cell(manifest.get("ranking"))),
            ("layers", cell(manifest.get("layers"))),
            ("seeds", cell(manifest.get("seeds"))),
        ],
    )
    if losses.empty or ranking.empty:
        section.text.append("Unfinished: filter_losses.parquet or ranking.parquet is missing.")
        return section
    intact = losses.drop_duplicates("task")[["task", "intact_loss", "intact_accuracy"]]
    section.tables += [
        frame_table(
            intact.rename(columns={"intact_loss": "intact loss", "intact_accuracy": "intact top-1"}),
            "The intact network on the sweep's images",
        ),
        frame_table(
            layer_summary(losses, ranking),
            "Single-filter lesions per layer and task",
            f"filter_losses.parquet holds all {len(losses):,} (layer, filter, task) rows",
        ),
    ]
    tasks = list(dict.fromkeys(losses["task"]))
    if len(tasks) >= 2:
        importance = filter_importance(losses, ranking, fraction)
        section.figures.append(
            drawn_figure(
                lambda stem: figures.plot_filter_importance(importance, (tasks[0], tasks[1]), stem),
                "Filters' importance for each task",
                f"Loss increase when each filter is lesioned alone; coloured: each task's top {fraction:.0%} of the "
                "layer, the filters the segregation analysis lesions",
            )
        )
    return section


def layer_summary(losses: pd.DataFrame, ranking: pd.DataFrame) -> pd.DataFrame:
    """Per layer and task: filters, mean and largest loss increase, and the top-ranked filters."""
    increase = losses.assign(increase=losses["loss"] - losses["intact_loss"])
    table = (
        increase.groupby(["layer_index", "layer", "task"], sort=True)
        .agg(filters=("filter", "count"), mean_increase=("increase", "mean"), max_increase=("increase", "max"))
        .reset_index()
    )
    top = ranking.sort_values("rank").groupby(["layer", "task"])["filter"].apply(lambda f: list(f[:TOP_LISTED]))
    table["top filters"] = [top.get((layer, task), []) for layer, task in zip(table["layer"], table["task"])]
    return table.drop(columns="layer_index").rename(
        columns={"mean_increase": "mean loss increase", "max_increase": "largest loss increase"}
    )


def filter_importance(losses: pd.DataFrame, ranking: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """Per (layer, filter, task): the loss increase of its single lesion and whether it is in the task's top
    `fraction` of the layer (as `sweeps.ranking.top_filters` chooses the filters to lesion)."""

    chosen = {
        (layer, task): set(top_filters(ranking, layer, task, fraction))
        for layer, task in ranking[["layer", "task"]].drop_duplicates().itertuples(index=False)
    }
    return losses.assign(
        increase=losses["loss"] - losses["intact_loss"],
        top=[
            filter_ in chosen.get((layer, task), ())
            for layer, task, filter_ in zip(losses["layer"], losses["task"], losses["filter"])
        ],
    )


# ------------------------------------------------------------------------------------------- segregation


def segregation_section(runs: list[Run], root: Path) -> Section:
    """One subsection per analysis, each beside the random-task control of the same sweep when there is one."""
    controls = {sweep_of(run): run for run in runs if is_random_control(run)}
    analyses = [run for run in runs if not is_random_control(run)]
    paired = {sweep_of(run) for run in analyses}
    alone = [run for run in controls.values() if sweep_of(run) not in paired]
    collapsed = len(analyses) + len(alone) > OPEN_RUNS
    return Section(
        "Segregation",
        text=[
            "For every swept layer and task, the task's top filters are lesioned together and every task's test split "
            "is classified. d(X|Y) is the proportional drop of task X's accuracy after lesioning task Y's top filters "
            "(1 - lesioned / intact accuracy); the segregation index of a layer is "
            "½[d(A|A) − d(B|A) + d(B|B) − d(A|B)]: 1 for separate filters, 0 when each lesion hurts both tasks alike. "
            "Intervals: hierarchical bootstrap over classes, then images. The random-task control splits all classes "
            "at random into pseudo-tasks of the same sizes and repeats the analysis."
        ],
        subsections=[segregation_analysis(run, controls.get(sweep_of(run)), root, collapsed) for run in analyses]
        + [segregation_analysis(run, None, root, collapsed) for run in alone],
    )


def segregation_analysis(run: Run, control: Run | None, root: Path, collapsed: bool) -> Section:
    """One analysis: settings, intact test accuracy, and its index, drops and normalised performance."""
    summary = run.json("summary.json")
    tables = {name: read_table(run, name) for name in ("accuracy", "drops", "segregation")}
    label = "random-task control" if is_random_control(run) else " vs ".join(summary.get("tasks") or [])
    section = Section(f"{label}: {relative(run.path, root)}", collapsed=collapsed)
    if not summary or any(table.empty for table in tables.values()):
        section.text.append("Unfinished: summary.json or a table (accuracy, drops, segregation) is missing.")
        return section
    fraction = float(summary["fraction"])
    section.facts = [
        ("lesion", f"top {fraction:.0%} of each layer's filters in each task's ranking"),
        ("accuracy", f"{SCOPE_LABELS[summary.get('default_scope', DEFAULT_SCOPE)]} (tables give both)"),
        (
            "intervals",
            f"{summary.get('confidence_level', 0.95):.0%}, {cell(summary.get('n_bootstraps'))} bootstrap resamples",
        ),
        ("test images", test_images(run)),
        ("random-task control", relative(control.path, root) if control else "none found beside this analysis"),
    ]
    section.tables.append(frame_table(intact_accuracy(tables["accuracy"]), "Intact network on the test split"))
    section.text += undefined_note(tables["accuracy"])
    section.subsections = [
        index_by_layer(run, control, tables["segregation"], fraction),
        drop_heatmap(run, tables["drops"], fraction),
        normalised_performance(run, tables["drops"], fraction),
    ]
    checks = ranking_checks_section(read_table(run, "reliability"), read_table(run, "overlap"), fraction)
    if checks is not None:
        section.subsections.append(checks)
    return section


def ranking_checks_section(reliability: pd.DataFrame, overlap: pd.DataFrame, fraction: float) -> Section | None:
    """Do the top sets hold up? Split-half reliability per layer and task, with a warning for the layers whose top
    sets barely beat chance, and the overlap of the tasks' top sets; None for analyses without them."""
    if reliability.empty and overlap.empty:
        return None
    section = Section(f"Top-{fraction:.0%} sets: reliability and overlap")
    if not reliability.empty:
        flagged = unreliable(reliability)
        if not flagged.empty:
            listed = ", ".join(f"{row.layer} ({row.task})" for row in flagged.itertuples())
            section.text.append(
                f"Warning: the top sets of {listed} are unreliable (split-half Jaccard below "
                f"{RELIABILITY_WARNING} and below twice chance): their lesion results rest on an accident of the "
                "ranking images."
            )
        section.tables.append(
            frame_table(
                reliability[["layer", "task", "top", "classes_per_half", "jaccard", "chance_jaccard", "spearman"]],
                "Split-half reliability: top sets ranked on two disjoint halves of each task's classes",
                "Jaccard overlap of the two top sets beside chance; Spearman correlation of the halves' losses",
                max_rows=len(reliability),
            )
        )
    if not overlap.empty:
        section.tables.append(
            frame_table(
                overlap[["layer", "task_a", "task_b", "top", "jaccard", "chance_jaccard"]],
                "Overlap of the tasks' top sets (Jaccard) beside chance",
                max_rows=len(overlap),
            )
        )
    return section


def test_images(run: Run) -> str:
    """Test images per evaluated task (the intact network's predictions), or '–' without predictions."""
    path = run.path / "predictions.parquet"
    if not readable_parquet(path):
        return cell(None)
    from analysis.segregation.indices import INTACT_LAYER

    intact = pd.read_parquet(path, columns=["layer", "eval_task"], filters=[("layer", "==", INTACT_LAYER)])
    return ", ".join(f"{task} {count:,}" for task, count in intact["eval_task"].value_counts(sort=False).items())


def undefined_note(accuracy: pd.DataFrame) -> list[str]:
    """A warning when the intact network gets no test image of a task right: drops relative to it are undefined."""
    from analysis.segregation.indices import INTACT_LAYER

    intact = accuracy[(accuracy["layer"] == INTACT_LAYER) & (accuracy["scope"] == DEFAULT_SCOPE)]
    zero = intact[intact["accuracy"] == 0]["eval_task"].tolist()
    if not zero:
        return []
    return [
        f"The intact network gets no {' or '.join(zero)} test image right ({SCOPE_LABELS[DEFAULT_SCOPE]} is 0), "
        "so proportional drops and the segregation index are undefined (–) there: train the network longer, or "
        "check its data."
    ]


def intact_accuracy(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Per task: the intact network's test top-1 with its interval, over all and over its own outputs."""
    from analysis.segregation.indices import INTACT_LAYER

    intact = accuracy[accuracy["layer"] == INTACT_LAYER]
    wide = intact.pivot(index="eval_task", columns="scope", values=["accuracy", "accuracy_low", "accuracy_high"])
    return pd.DataFrame(
        {
            "task": wide.index,
            **{
                f"{SCOPE_LABELS[scope]} [95% CI]": [
                    interval(*values)
                    for values in zip(
                        wide[("accuracy", scope)], wide[("accuracy_low", scope)], wide[("accuracy_high", scope)]
                    )
                ]
                for scope in SCOPES
                if ("accuracy", scope) in wide.columns
            },
        }
    )


def index_by_layer(run: Run, control: Run | None, segregation: pd.DataFrame, fraction: float) -> Section:
    """The index by layer with its band (and the control's beside it), and its values per scope."""
    from analysis.segregation.run import segregation_curves

    inputs = [f"{run.path}=network"] + ([f"{control.path}=random tasks"] if control else [])
    curves = segregation_curves(inputs, fraction)
    title = "Task segregation by layer" + (", with the random-task control" if control else "")
    figure = (
        drawn_figure(
            lambda stem: figures.plot_segregation_by_layer(curves, stem, title=title),
            title,
            "Segregation index per conv layer with its 95% bootstrap interval (band)",
        )
        if control
        else figure_or_drawn(
            run.path / "figures" / "segregation_by_layer.png",
            lambda stem: figures.plot_segregation_by_layer(curves, stem, title=title),
            title,
            "Segregation index per conv layer with its 95% bootstrap interval (band)",
        )
    )
    frames = [("network", segregation)] + ([("random tasks", read_table(control, "segregation"))] if control else [])
    tables = [index_table(frames, fraction, scope) for scope in SCOPES]
    fractions = sorted(set(segregation["fraction"]))
    if len(fractions) > 1:
        tables.append(fraction_table(segregation))
    return Section("Segregation by layer", figures=[figure], tables=tables)


def index_table(frames: list[tuple[str, pd.DataFrame]], fraction: float, scope: str) -> Table:
    """Per layer: the index with its interval for each condition and pair, at one fraction and scope."""
    columns: dict[str, pd.Series] = {}
    for condition, table in frames:
        rows = table[(table["fraction"] == fraction) & (table["scope"] == scope)]
        for (task_a, task_b), pair in rows.groupby(["task_a", "task_b"], sort=False):
            columns[f"{condition}: {task_a} vs {task_b}"] = pd.Series(
                [interval(*values) for values in zip(pair["si"], pair["si_low"], pair["si_high"])],
                index=pd.Index(pair["layer"]),
            )
    layers = frames[0][1].drop_duplicates("layer").sort_values("layer_index")["layer"]
    wide = pd.DataFrame(columns, index=pd.Index(layers, name="layer")).reset_index()
    return frame_table(wide, f"Segregation index [95% CI], {SCOPE_LABELS[scope]}")


def fraction_table(segregation: pd.DataFrame) -> Table:
    """The index per layer at every lesion fraction analysed (default scope, first pair)."""
    rows = segregation[segregation["scope"] == DEFAULT_SCOPE]
    first = rows[["task_a", "task_b"]].iloc[0]
    rows = rows[(rows["task_a"] == first["task_a"]) & (rows["task_b"] == first["task_b"])]
    wide = rows.pivot(index=["layer_index", "layer"], columns="fraction", values="si").reset_index()
    wide.columns = [f"top {column:.0%}" if isinstance(column, float) else column for column in wide.columns]
    return frame_table(
        wide.drop(columns="layer_index"),
        f"Segregation index by lesion fraction ({first['task_a']} vs {first['task_b']}, all outputs)",
    )


def drop_heatmap(run: Run, drops: pd.DataFrame, fraction: float) -> Section:
    """The heat map of proportional drops d(evaluated | lesioned) across layers."""
    from analysis.segregation.run import headline_rows

    figure = figure_or_drawn(
        run.path / "figures" / "drop_heatmap.png",
        lambda stem: figures.plot_drop_heatmap(headline_rows(drops, fraction), stem),
        "Proportional drops",
        "d(X|Y): the drop of task X's accuracy after lesioning task Y's top filters, per layer (all outputs)",
    )
    return Section("Drop heatmap", figures=[figure])


def normalised_performance(run: Run, drops: pd.DataFrame, fraction: float) -> Section:
    """The run's normalised-performance figures (else one drawn for the last layer) and the values per layer."""
    from analysis.segregation.run import headline_rows

    rows = headline_rows(drops, fraction)
    written = sorted((run.path / "figures").glob("normalised_performance_*.png"))
    found = [
        file_figure(
            path,
            f"Normalised performance, {path.stem.removeprefix('normalised_performance_')}",
            "each task's accuracy after lesioning each task's top filters, relative to the intact network [95% CI]",
        )
        for path in written
    ]
    last = rows.sort_values("layer_index")["layer"].iloc[-1]
    shown = found or [
        drawn_figure(
            lambda stem: figures.plot_normalised_performance(rows, last, stem),
            f"Normalised performance, {last}",
            "drawn by the report from drops.parquet",
        )
    ]
    return Section(
        "Normalised performance",
        text=["Lesioned accuracy / intact accuracy [95% CI], all outputs."],
        figures=shown,
        tables=[frame_table(normalised_by_layer(rows), "Normalised performance per layer")],
    )


def normalised_by_layer(drops: pd.DataFrame) -> pd.DataFrame:
    """One row per layer, one column per (evaluated task, lesioned task): normalised performance [interval]."""
    values = [interval(*row) for row in zip(drops["normalised"], drops["normalised_low"], drops["normalised_high"])]
    conditions = [
        f"{evaluated} task, {lesioned} filters lesioned"
        for evaluated, lesioned in zip(drops["eval_task"], drops["lesioned_task"])
    ]
    wide = drops.assign(value=values, condition=conditions).pivot(
        index=["layer_index", "layer"], columns="condition", values="value"
    )
    return wide.reset_index().drop(columns="layer_index").rename_axis(columns=None)
