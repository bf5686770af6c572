"""`specialize cluster plan -- COMMAND ...`: what a cluster job of a specialize command needs, as shell assignments
that cluster/launch.sh evaluates; the CLI is the one source of it (each command says its needs: `common.cluster_job`).

    needs_ray=0|1            the command runs on a Ray cluster (the job starts one and passes --address)
    data_dir=DIR             the data directory it reads ('' when none), to copy to node-local scratch
    data_word=N              the word of COMMAND that holds it (-1: not given, append data_setting + the copy)
    data_setting=TEXT        how a word sets it: TEXT followed by the directory (e.g. --data= or data.dir=)
    seed_settings=(...)      per array index: words that set the seed and an output of its own, each followed by
                             the index (none: the command takes no per-job seed)
    process_settings=(...)   words that set the processes per node and the nodes, each followed by the count
    cpus_per_task=N          CPUs per process it asks for by default ('' when it has no say)
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence

from common.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `cluster` command and its `plan` subcommand."""
    cluster = subparsers.add_parser("cluster", help="what a cluster job of a command needs (for cluster/launch.sh)")
    commands = cluster.add_subparsers(dest="cluster_command", required=True, metavar="SUBCOMMAND")
    parser = commands.add_parser(
        "plan",
        help="print what a Slurm job of a specialize command needs, as shell assignments",
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--array", action="store_true", help="the job is a job array: one job per seed")
    parser.add_argument(
        "words", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the command's words after `specialize`"
    )
    parser.set_defaults(run=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    """Parse the command as `specialize` would (its own one-line errors) and print its needs."""
    from common.cluster_job import no_cluster_needs
    from specialize.cli import build_parser

    words = args.words[1:] if args.words[:1] == ["--"] else args.words
    if not words:
        raise UserError("no command given; write e.g. specialize cluster plan -- lesion --checkpoint ...")
    command = build_parser().parse_args(words)
    job = getattr(command, "job", no_cluster_needs)(command)
    if job.ray and getattr(command, "address", None):
        raise UserError(
            "the job starts its own Ray cluster and passes --address itself; drop --address from the command"
        )
    if job.ray and getattr(command, "ray_dashboard", False):
        raise UserError("the job's Ray cluster runs the dashboard: put --ray-dashboard before --, not in the command")
    if args.array:
        if job.seed_settings is None:
            raise UserError(
                f"`{command.prog}` takes no per-job seed; a job array runs one job per seed of a command that takes one"
            )
        seed = job.seed_settings[0]
        if any(word == seed.rstrip("=") or word.startswith(seed) for word in words):
            raise UserError(f"--array sets {seed}<array index> for each job; drop {seed}... from the command")
    index = data_word(words, job.data_setting) if job.data_dir is not None else -1
    assignments = {
        "needs_ray": str(int(job.ray)),
        "data_dir": job.data_dir or "",
        "data_word": str(index),
        "data_setting": job.data_setting or "",
        "cpus_per_task": "" if job.cpus_per_task is None else str(job.cpus_per_task),
    }
    lines = [f"{name}={shlex.quote(value)}" for name, value in assignments.items()]
    for name, values in (("seed_settings", job.seed_settings or ()), ("process_settings", job.process_settings)):
        lines.append(f"{name}=({' '.join(shlex.quote(value) for value in values)})")
    sys.stdout.flush()
    sys.stdout.buffer.write(b"".join(os.fsencode(line) + b"\n" for line in lines))  # paths in any encoding
    return 0


def data_word(words: Sequence[str], setting: str) -> int:
    """The index of the (last) word that holds the value `setting` sets: the word after an option given alone
    (`--data DIR`), or the word that starts with the setting (`--data=DIR`, `data.dir=DIR`); -1 when none does."""
    option = setting.rstrip("=")
    for index in reversed(range(len(words))):
        if setting.startswith("--") and words[index] == option and index + 1 < len(words):
            return index + 1
        if words[index].startswith(setting):
            return index
    return -1
