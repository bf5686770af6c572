"""`specialize report DIR`: one self-contained HTML page of a run, a demo or a study."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `report` subcommand."""
    parser = subparsers.add_parser(
        "report",
        help="write one self-contained HTML report of a run, demo or study directory",
        description="Find every run under DIR by its manifest's kind and write one HTML page (figures embedded, "
        "no network needed): what was run (configs, manifests, data counts, skipped files), training "
        "curves, intact accuracies, segregation by layer with its intervals and the random-task "
        "control, drops, normalised performance, other analyses (decoding, RSA, feature "
        "visualisation, ...) and a study's seed aggregation.",
    )
    parser.add_argument("directory", metavar="DIR", help="a run, demo or study directory")
    parser.add_argument("--out", metavar="FILE", help="the HTML file to write (default: DIR/report.html)")
    parser.add_argument("--title", help="the page's title (default: the study's or directory's name)")
    parser.set_defaults(run=run_report_command)


def run_report_command(args: argparse.Namespace) -> int:
    """Write the report and print its path."""
    from analysis.report.build import write_report

    print(f"report: {write_report(args.directory, args.out, args.title, progress=True)}")
    return 0
