"""W&B runs of the stages that are not Lightning trainings (lesion sweep, segregation, a study's aggregate): one
place that opens the run with its group, name, job type and labels, logs figures, tables and summary scalars, and
closes it. Offline by default (`wandb sync DIR` uploads later); `WANDB_MODE`, when set, wins."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.redact import redact, redacted_sys_argv

if TYPE_CHECKING:
    import pandas as pd

WANDB_MODES = ("offline", "online", "disabled")  # the first is every run's default
WANDB_PROJECT = "specialize"  # the default project


@dataclass(frozen=True)
class WandbTarget:
    """Where a stage logs: a project (None: W&B off unless a run is active), mode, group, run name, and labels
    (pair, tasks, seed, ...) that go into the run config so that the runs table filters and groups by them."""

    project: str | None = None
    mode: str = WANDB_MODES[0]
    group: str | None = None
    name: str | None = None
    labels: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from common.typed_config import check_choice

        check_choice("mode", self.mode, WANDB_MODES)


def wandb_mode(requested: str) -> str:
    """The W&B mode to use: WANDB_MODE when set, else `requested` (offline, online or disabled)."""
    return os.environ.get("WANDB_MODE") or requested


def log_stage(
    target: WandbTarget,
    job_type: str,
    run_dir: str | os.PathLike,
    config: Mapping[str, Any],
    figures: Mapping[str, Path] = {},
    tables: Mapping[str, pd.DataFrame] = {},
    summary: Mapping[str, float] = {},
) -> bool:
    """Log a stage's figures (PNG), tables and summary scalars to the active W&B run, or to a new run for `target`
    (secrets redacted from its names, config and recorded command line).

    Returns False when nothing was logged: no active run and no project, or the mode is "disabled".
    """
    import wandb

    own_run, mode = wandb.run is None, wandb_mode(target.mode)
    if own_run and (target.project is None or mode == "disabled"):
        return False
    if own_run:
        with redacted_sys_argv():  # W&B records the command line when its run starts
            run = wandb.init(
                project=redact(target.project),
                group=redact(target.group),
                name=redact(target.name),
                job_type=job_type,
                config=redact({**config, **target.labels}),
                dir=str(run_dir),
                mode=mode,
            )
    else:
        run = wandb.run
    run.log(
        {
            **{f"figures/{name}": wandb.Image(str(path)) for name, path in figures.items()},
            **{f"tables/{name}": wandb.Table(dataframe=frame) for name, frame in tables.items()},
        }
    )
    run.summary.update(dict(summary))
    if own_run:
        run.finish()
    return True
