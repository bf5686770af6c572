"""What a command needs from a cluster job, said by the command itself: each subcommand's parser sets
`job=<function of its parsed arguments -> ClusterJob>` (`set_defaults`), and `specialize cluster plan` prints it for
cluster/launch.sh, so the CLI is the one source of which commands run on Ray, which data directory each reads and how
it is set, and how a job of a Slurm array gets its seed and its own output.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class ClusterJob:
    """A command's needs. Settings are given as the text of one command-line word before its value: an option's
    `--data=` or an override's `data.dir=`."""

    ray: bool = False  # its work runs on a Ray cluster, which it joins with --address
    data_dir: str | None = None  # the data directory it reads, as given (None: none, or not known)
    data_setting: str | None = None  # the word that sets that directory, e.g. "--data=" or "data.dir="
    seed_settings: tuple[str, ...] | None = None  # per array index: words that set the seed and an output of its own
    process_settings: tuple[str, ...] = ()  # words that set the processes per node and the nodes (training)
    cpus_per_task: int | None = None  # CPUs per process it asks for by default


def no_cluster_needs(args: argparse.Namespace) -> ClusterJob:
    """A command that runs as it is: no Ray cluster, no data to copy, no per-job seed."""
    return ClusterJob()


def ray_job(args: argparse.Namespace) -> ClusterJob:
    """A command that runs its work on Ray and reads the data directory of its --data option (when it has one)."""
    data = getattr(args, "data", None)
    return ClusterJob(ray=True, data_dir=data, data_setting="--data=" if data is not None else None)
