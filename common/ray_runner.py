"""Keyed units of work on Ray: each result written atomically as it finishes, finished ones skipped, retries,
a progress bar, resources per unit. Every Ray stage (lesion sweep, segregation, activations) runs through here.

A unit is a function call whose result (a DataFrame) belongs in one Parquet file. `run_units` submits the
units whose file is missing or unreadable (a file truncated by a crash is recomputed, not trusted), writes each
result the moment its task returns, and retries a task whose worker died (`Resources.max_retries`). Large
arguments shared by many units (a model, images) should be `ray.put` once by the caller and passed as refs.
Each unit's file records where it ran (`unit_node`: the Slurm node, or the host, and the Ray node id) in its
Parquet metadata, beside the result rather than in it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from common.console import ProgressLines, hidden, verbose
from common.errors import SettingError, UserError
from common.io import parquet_metadata, readable_parquet, write_parquet
from common.typed_config import check_at_least


@dataclass(frozen=True)
class Resources:
    """What each Ray task asks for: CPUs (also its torch threads), GPUs (fractions share a GPU), and retries."""

    cpus: float = 1.0
    gpus: float = 0.0
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.cpus <= 0:
            raise SettingError("cpus", f"must be positive, not {self.cpus}")
        check_at_least("gpus", self.gpus, 0)
        check_at_least("max_retries", self.max_retries, 0)

    def options(self) -> dict[str, Any]:
        """Ray task options."""
        return {"num_cpus": self.cpus, "num_gpus": self.gpus, "max_retries": self.max_retries}

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Resources:
        """The resources given by the options `add_ray_arguments` added."""
        return cls(cpus=args.cpus, gpus=args.gpus, max_retries=args.max_retries)


def add_ray_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every Ray command about its cluster: one to join, or a local one, with its dashboard or not."""
    parser.add_argument("--address", help="Ray cluster to join (default: start a local one)")
    parser.add_argument(
        "--ray-dashboard",
        action="store_true",
        help="start the local Ray with its dashboard (on 127.0.0.1; its address is printed); needs Ray's dashboard "
        "packages (specialize's extra [dashboard], i.e. ray[default]). A cluster joined with --address runs its "
        "own (cluster/launch.sh --ray-dashboard)",
    )


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every Ray stage takes: the cluster (`add_ray_cluster_arguments`) and the resources of each task;
    the command is a Ray command for cluster jobs (`common.cluster_job`)."""
    from common.cluster_job import ray_job

    parser.set_defaults(job=ray_job)
    defaults = Resources()
    add_ray_cluster_arguments(parser)
    parser.add_argument(
        "--gpus-per-task",
        dest="gpus",
        type=float,
        default=defaults.gpus,
        help="GPUs per Ray task; fractions share a GPU (default: %(default)s)",
    )
    parser.add_argument(
        "--cpus-per-task",
        dest="cpus",
        type=float,
        default=defaults.cpus,
        help="CPUs (and torch threads) per Ray task (default: %(default)s)",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        default=defaults.max_retries,
        help="retries of a task whose worker died (default: %(default)s)",
    )


@dataclass(frozen=True)
class WorkUnit:
    """One call of the stage's function: its arguments, where its result goes, and its weight in the progress bar."""

    path: Path
    args: tuple
    size: int = 1


@contextlib.contextmanager
def ray_session(address: str | None, dashboard: bool = False) -> Iterator[None]:
    """Use the running Ray session, join the cluster at `address`, or start a local one (shut down after), with
    Ray's dashboard on 127.0.0.1 if `dashboard` (its address printed on stderr)."""
    import ray

    if ray.is_initialized():
        yield
        return
    if dashboard:
        check_dashboard(address)
    try:
        context = ray.init(
            address=address,
            include_dashboard=dashboard,
            log_to_driver=False,
            logging_level=logging.DEBUG if verbose() else logging.WARNING,  # "Started a local Ray instance" and such
            **({"dashboard_host": DASHBOARD_HOST} if dashboard else {}),
        )
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise UserError(
            f"cannot join the Ray cluster at {address} ({error}); check --address or drop it to start a local cluster"
        ) from None
    try:
        if dashboard:
            port = context.dashboard_url.rsplit(":", 1)[1]
            print(
                f"Ray dashboard: http://{context.dashboard_url} (from another machine: "
                f"ssh -N -L {port}:{context.dashboard_url} {socket.gethostname()}, then http://localhost:{port})",
                file=sys.stderr,
            )
        yield
    finally:
        ray.shutdown()


DASHBOARD_HOST = "127.0.0.1"  # not every interface: the dashboard can submit jobs to the cluster


def check_dashboard(address: str | None) -> None:
    """UserError unless Ray's dashboard can start here: a local Ray, with the dashboard's packages installed."""
    import ray
    from ray._private.utils import get_dashboard_dependency_error  # Ray's own check, as `ray start` makes it

    if address is not None:
        raise UserError(
            "--ray-dashboard starts the dashboard of a local Ray, but --address joins a cluster, which runs its own "
            "(cluster/launch.sh --ray-dashboard, or ray start --head --include-dashboard=true); drop one of them"
        )
    missing = get_dashboard_dependency_error()
    if missing is not None:
        raise UserError(
            f"--ray-dashboard needs Ray's dashboard packages ({missing}); install them with "
            f"pip install 'ray[default]=={ray.__version__}' (specialize's extra [dashboard]), or drop --ray-dashboard"
        )


def command_session(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """The Ray session a command runs in: for a Ray command given --ray-dashboard, a local Ray with its dashboard,
    started before the command's stages, which use it; otherwise none (each stage starts or joins its own)."""
    if not getattr(args, "ray_dashboard", False):
        return contextlib.nullcontext()
    return ray_session(args.address, dashboard=True)


def worker_device() -> Any:
    """The GPU Ray assigned to this task, or the CPU."""
    import ray
    import torch

    return torch.device("cuda", 0) if ray.get_gpu_ids() else torch.device("cpu")


NODE_METADATA_KEY = "specialize.node"


def this_node() -> dict[str, str]:
    """Where this Ray task runs: `node`, the Slurm node (a Ray node that cluster/launch.sh started under srun passes
    SLURMD_NODENAME to its workers) or else the host name, and `ray_node_id`."""
    import ray

    return {
        "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
        "ray_node_id": ray.get_runtime_context().get_node_id(),
    }


def unit_node(path: str | os.PathLike) -> dict[str, str] | None:
    """Where the unit whose result is the file `path` ran (`this_node`), as `run_units` recorded it; None if not."""
    recorded = parquet_metadata(path, NODE_METADATA_KEY)
    return json.loads(recorded) if recorded is not None else None


def _call_with_threads(function: Callable, threads: int, *args: Any) -> tuple[Any, dict[str, str]]:
    """Run `function(*args)` on a worker with torch using `threads` threads (the CPUs the task asked for); returns
    its result and where it ran."""
    import torch

    torch.set_num_threads(threads)
    return function(*args), this_node()


def run_units(
    function: Callable,
    units: Sequence[WorkUnit],
    resources: Resources,
    description: str,
    progress: bool = True,
    unit_name: str = "unit",
) -> None:
    """Run `function(*unit.args)` as a Ray task for every unit without a readable result, writing each result to
    `unit.path` atomically as soon as it returns. Needs a Ray session (`ray_session`)."""
    import ray

    missing = [unit for unit in units if not readable_parquet(unit.path)]
    if not missing:
        return
    remote = ray.remote(_call_with_threads).options(name=function.__name__, **resources.options())
    threads = max(1, int(resources.cpus))
    pending = {remote.remote(function, threads, *unit.args): unit for unit in missing}
    total, done = sum(unit.size for unit in units), sum(unit.size for unit in units if unit not in missing)
    lines = ProgressLines(description, total, unit_name, done) if progress else None
    with tqdm(total=total, initial=done, unit=unit_name, desc=description, disable=hidden(progress)) as bar:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            unit = pending.pop(ready[0])
            result, node = ray.get(ready[0])
            write_parquet(unit.path, result, metadata={NODE_METADATA_KEY: json.dumps(node)})
            bar.update(unit.size)
            if lines is not None:
                lines.update(unit.size)
