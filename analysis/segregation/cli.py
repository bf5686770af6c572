"""`specialize segregation` (top-fraction lesions, segregation index with bootstrap CIs) and `specialize figures`."""

from __future__ import annotations

import argparse

from analysis.segregation.settings import (
    DEFAULT_CLI_NULL_PARTITIONS,
    DEFAULT_SCOPE,
    PARTITION_SCHEMES,
    ROUNDINGS,
    SCOPES,
    SIGNIFICANCE,
    SegregationSettings,
)
from common.ray_runner import Resources, add_ray_arguments
from common.wandb_runs import add_wandb_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `segregation` and `figures` subcommands."""
    _register_segregation(subparsers)
    _register_figures(subparsers)


def parse_fractions(text: str) -> tuple[float, ...]:
    """'0,0.1,0.2' -> (0.0, 0.1, 0.2); a usage error on anything else."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0,0.1,0.2,0.3, not {text!r}"
        ) from None


def _register_segregation(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segregation",
        help="lesion each task's top filters per layer; segregation index with bootstrap CIs",
        description="For every swept layer and task, lesion the top fraction of the layer's filters in that task's "
        "ranking and classify the full test split of every task (every condition from one pass of the intact "
        "network per batch, each test image read once; Ray tasks take slices of the test images); report "
        "normalised performance, proportional drops and the segregation index per layer with hierarchical-bootstrap "
        "95%% CIs. "
        "Accuracy is top-1 over all outputs (tables also give it restricted to each task's outputs). "
        "Resumable: rerun the same command to continue.",
    )
    parser.add_argument("--sweep", required=True, help="output directory of `specialize lesion`")
    parser.add_argument("--data", help="data directory (default: the sweep's)")
    parser.add_argument("--out", required=True, help="output directory (resumes the analysis already there)")
    defaults = SegregationSettings()
    parser.add_argument(
        "--fraction", type=float, default=defaults.fraction, help="headline lesion fraction (default: %(default)s)"
    )
    parser.add_argument(
        "--fractions",
        type=parse_fractions,
        default=(),
        metavar="F,F,...",
        help="more fractions for the tables, e.g. 0,0.1,0.2,0.3",
    )
    parser.add_argument(
        "--rounding",
        default=defaults.rounding,
        help=f"{' or '.join(ROUNDINGS)}: how a layer's top-fraction count is rounded: to the nearest integer, "
        "halves up (20%% of 64 filters: 13), or down (12) (default: %(default)s)",
    )
    parser.add_argument(
        "--bootstraps",
        dest="n_bootstraps",
        type=int,
        default=defaults.n_bootstraps,
        help="bootstrap resamples (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the bootstrap")
    parser.add_argument(
        "--null-partitions",
        type=int,
        default=DEFAULT_CLI_NULL_PARTITIONS,
        metavar="P",
        help="permutation null: P random partitions of the classes into pseudo-tasks, each ranked (from the sweep's "
        "per-class table) and lesioned like the real tasks in the same pass over the test set; adds null_mean, "
        "null_low, null_high (2.5 and 97.5 percentiles) and p_value = (1 + #{null >= observed}) / (1 + P) per layer; "
        "partition i is seeded by the network's seed and i. The least p is 1/(1+P): use 200 or more for a paper; "
        "0: no null (default: %(default)s)",
    )
    parser.add_argument(
        "--partition",
        default=defaults.partition,
        choices=PARTITION_SCHEMES,
        help="how the null and --random-tasks deal the classes into pseudo-tasks: sizes (as many classes as each real "
        "task) or halves (all classes pooled and split in equal parts, as the authors' code did) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--random-tasks",
        action="store_true",
        help="control: analyse partition 1 of the null (seeded by the network's seed) as the tasks, its filters "
        "ranked from the sweep's per-class table (no second sweep; a greedy sweep's control runs greedy rounds of its "
        "own); implies --null-partitions 0",
    )
    parser.add_argument("--figure-layer", help="layer of the normalised-performance figure (default: the last swept)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="test images read per batch; the evaluation engine plans its passes within half the free memory of "
        "a task's device (default: %(default)s)",
    )
    parser.add_argument(
        "--images-per-unit",
        type=int,
        default=defaults.images_per_unit,
        help="test images per Ray task (a slice of one task's test file, evaluated under every condition); does not "
        "change the results (default: %(default)s)",
    )
    add_ray_arguments(parser)
    add_wandb_arguments(parser)
    parser.set_defaults(run=run_segregation_command)


def run_segregation_command(args: argparse.Namespace) -> int:
    """Run (or resume) the analysis and print the segregation index per layer."""
    from analysis.segregation.run import run_segregation

    settings = SegregationSettings(
        fraction=args.fraction,
        fractions=args.fractions,
        n_bootstraps=args.n_bootstraps,
        rounding=args.rounding,
        seed=args.seed,
        random_tasks=args.random_tasks,
        null_partitions=0 if args.random_tasks else args.null_partitions,
        partition=args.partition,
        batch_size=args.batch_size,
        images_per_unit=args.images_per_unit,
        figure_layer=args.figure_layer,
        resources=Resources.from_args(args),
    )
    summary = run_segregation(args.sweep, args.out, args.data, settings, args.address)
    print(format_summary(summary))
    print(f"tables, summary.json and figures/ in {args.out}")
    return 0


def format_summary(summary: dict) -> str:
    """The segregation index per layer with its CI, one line per layer and pair, for the default scope."""
    scope = summary["default_scope"]
    lines = [
        f"segregation index (top {summary['fraction']:.0%} lesions, {scope}, "
        f"{summary['confidence_level']:.0%} CI from {summary['n_bootstraps']} resamples)"
    ]
    if summary.get("null_partitions"):
        lines.append(
            f"  null: {summary['null_partitions']} random partitions ({summary['partition']}), its mean and 95% band; "
            f"p = (1 + #null >= index) / (1 + partitions), * p < {SIGNIFICANCE}"
        )
    for pair, rows in summary["segregation_index"][scope].items():
        lines += [
            f"  {pair:<20} {row['layer']:<8} {row['si']:+.3f}  [{row['low']:+.3f}, {row['high']:+.3f}]{null_text(row)}"
            for row in rows
        ]
    return "\n".join(lines)


def null_text(row: dict) -> str:
    """'  null +0.010 [-0.050, +0.070]  p 0.048 *' for a summary row with a null, else ''."""
    if "p_value" not in row:
        return ""
    star = " *" if row["p_value"] < SIGNIFICANCE else ""
    band = f"[{row['null_low']:+.3f}, {row['null_high']:+.3f}]"
    return f"  null {row['null_mean']:+.3f} {band}  p {row['p_value']:.3f}{star}"


def _register_figures(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "figures",
        help="plot the segregation index per layer of several analyses on one axis",
        description="Draw the segregation index per layer with its CI band for several `specialize segregation` "
        "outputs (networks, task pairs, controls) on one axis, as PNG and SVG.",
    )
    parser.add_argument("inputs", nargs="+", metavar="DIR[=LABEL]", help="segregation output directories")
    parser.add_argument("--out", required=True, help="figure path without extension")
    parser.add_argument("--fraction", type=float, help="lesion fraction (default: each analysis' headline)")
    parser.add_argument("--scope", choices=tuple(SCOPES), default=DEFAULT_SCOPE)
    parser.add_argument("--title", default="Task segregation")
    parser.set_defaults(run=run_figures_command)


def run_figures_command(args: argparse.Namespace) -> int:
    """Combine the segregation tables of several analyses into one figure."""
    from analysis.figures import plot_segregation_by_layer
    from analysis.segregation.run import segregation_curves

    curves = segregation_curves(args.inputs, args.fraction, args.scope)
    paths = plot_segregation_by_layer(curves, args.out, title=args.title)
    print(f"wrote {', '.join(map(str, paths))}")
    return 0
