"""W&B runs of the stages, with lineage: one place that opens a stage's run with its group, name, job type and
labels, logs its figures, tables and summary scalars, declares the artifacts it used and made, and closes it.
Offline by default (`wandb sync DIR` uploads later); `WANDB_MODE`, when set, wins.

A stage logs when it finishes (`common.stage.StageDir.finish(kind, log=StageLog(...))`) to the target set around it
(`logging_to`: the CLI's `--wandb-*` options, a study's trial); training logs through Lightning's W&B logger and
declares its artifacts with `declare_artifacts`.

Artifacts: each is named `<type>-<first 12 hex digits of the sha256 of the file that defines it>` (a data
directory's manifest.json, a checkpoint, a sweep's ranking.parquet, a segregation's segregation.parquet), so the stage
that makes it and every stage that uses it build the same artifact from the files alone, and W&B's lineage graph
joins them: data -> model -> sweep -> segregation. Data and checkpoints are recorded by reference (file://, with
W&B's checksum of the content, the sha256 in the metadata; checkpoints uploaded only with
`wandb.upload_checkpoints`), tables are uploaded.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.io import file_sha256
from common.layout import MANIFEST_FILE
from common.redact import redact, redacted_sys_argv

if TYPE_CHECKING:
    import pandas as pd

WANDB_MODES = ("offline", "online", "disabled")  # the first is every run's default
WANDB_PROJECT = "specialize"  # the default project
SERVICE_VARIABLE = "WANDB_SERVICE"  # how W&B hands its service to child processes


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

        check_choice("wandb_mode", self.mode, WANDB_MODES)  # the CLI names it --wandb-mode


@dataclass(frozen=True)
class ArtifactFiles:
    """A W&B artifact of files on disk: its type, its files (the first defines it), whether they are recorded by
    reference (else uploaded), aliases, metadata, and the first file's sha256 when known (else read when logged)."""

    type: str
    files: tuple[Path, ...]
    reference: bool = False
    aliases: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    sha256: str | None = None

    def defining_sha256(self) -> str:
        """The sha256 of the file that defines the artifact."""
        return self.sha256 or file_sha256(self.files[0])

    def name(self) -> str:
        """`<type>-<sha256[:12]>`: the same for the stage that makes it and the stages that use it."""
        return safe_name(f"{self.type}-{self.defining_sha256()[:12]}")


@dataclass(frozen=True)
class StageLog:
    """What a finished stage logs: summary scalars, tables, figures (PNG), and the artifacts it used and made."""

    summary: Mapping[str, float] = field(default_factory=dict)
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    figures: Mapping[str, Path] = field(default_factory=dict)
    uses: Sequence[ArtifactFiles] = ()
    makes: Sequence[ArtifactFiles] = ()


_target: contextvars.ContextVar[WandbTarget | None] = contextvars.ContextVar("wandb_target", default=None)


@contextlib.contextmanager
def logging_to(target: WandbTarget | None) -> Iterator[None]:
    """Every stage that finishes inside this block logs its run to `target` (None: to none)."""
    token = _target.set(target)
    try:
        yield
    finally:
        _target.reset(token)


def current_target() -> WandbTarget | None:
    """The target set by the innermost `logging_to`, or None."""
    return _target.get()


def quiet_settings() -> Any:
    """W&B settings for a run: quiet (no banners, no summary blocks) unless the console is verbose."""
    import wandb

    from common.console import verbose

    return wandb.Settings(quiet=not verbose(), silent=not verbose())


def wandb_mode(requested: str) -> str:
    """The W&B mode to use: WANDB_MODE when set, else `requested` (offline, online or disabled)."""
    return os.environ.get("WANDB_MODE") or requested


def data_artifact(data_dir: str | os.PathLike) -> ArtifactFiles:
    """A built data directory as a `dataset` artifact: its manifest.json (which holds every file's hash), by
    reference (read when logged: `data build` logs it after writing the manifest)."""
    manifest = Path(data_dir).resolve() / MANIFEST_FILE
    return ArtifactFiles("dataset", (manifest,), reference=True, metadata={"path": str(manifest.parent)})


def model_artifact(checkpoint: str | os.PathLike, sha256: str | None = None, upload: bool = False) -> ArtifactFiles:
    """A checkpoint as a `model` artifact, by reference unless `upload`, its name (best, last) as an alias; its
    sha256 goes into the metadata when logged."""
    path = Path(checkpoint).resolve()
    return ArtifactFiles("model", (path,), not upload, (path.stem,), {"path": str(path)}, sha256)


def table_artifact(kind: str, directory: str | os.PathLike, names: Sequence[str]) -> ArtifactFiles:
    """A stage's tables (files in `directory`; the first defines the artifact) as an artifact of type `kind`,
    uploaded."""
    paths = tuple(Path(directory).resolve() / name for name in names)
    return ArtifactFiles(kind, paths, metadata={"path": str(paths[0].parent)})


def figures_in(directory: str | os.PathLike) -> dict[str, Path]:
    """The PNG figures in `directory`, by name."""
    return {path.stem: path for path in sorted(Path(directory).glob("*.png"))}


def wandb_artifact(spec: ArtifactFiles) -> Any:
    """The wandb.Artifact of `spec` (its defining file's sha256 in the metadata)."""
    import wandb

    metadata = redact({**spec.metadata, "sha256": spec.defining_sha256()})
    artifact = wandb.Artifact(spec.name(), spec.type, metadata=metadata)
    for path in spec.files:
        if spec.reference:
            artifact.add_reference(path.as_uri(), name=path.name, checksum=True)
        else:
            artifact.add_file(str(path), name=path.name)
    return artifact


def safe_name(name: str) -> str:
    """An artifact name W&B accepts: letters, digits, '-', '_' and '.'."""
    return re.sub(r"[^\w.-]", "_", name)


def declare_artifacts(run: Any, uses: Sequence[ArtifactFiles] = (), makes: Sequence[ArtifactFiles] = ()) -> None:
    """Declare in `run` the artifacts it used and made. Offline, W&B's `use_artifact` refuses to run (wandb 0.31:
    "Cannot use artifact when in offline mode"; its documentation offers no public alternative), so a used artifact
    is recorded as `use_artifact` records a draft artifact online, through W&B's private `Run._log_artifact(...,
    use_after_commit=True)`: `wandb sync` then marks it used by the run. Being private, it may change with a wandb
    release: test_wandb_lineage.py checks these edges against the version constraints.txt pins."""
    for spec in uses:
        if run.settings._offline:
            run._log_artifact(wandb_artifact(spec), aliases=list(spec.aliases), use_after_commit=True)
        else:
            run.use_artifact(wandb_artifact(spec), aliases=list(spec.aliases))
    for spec in makes:
        run.log_artifact(wandb_artifact(spec), aliases=list(spec.aliases))


def start_run(init: Any) -> Any:
    """`init()` (which calls wandb.init), attaching cleanly after a killed driver: a W&B service that outlived the
    kill, handed down through WANDB_SERVICE, still holds the run id of a resumed run ("run ID ... is in use"); then
    this process leaves that service and starts its own, and the same run id attaches."""
    import wandb

    try:
        return init()
    except Exception as error:
        if "is in use" not in str(error) or SERVICE_VARIABLE not in os.environ:
            raise
    wandb.teardown()
    os.environ.pop(SERVICE_VARIABLE)
    return init()


def add_wandb_arguments(parser: Any) -> None:
    """The W&B options of a stage's command: project, mode, group and run name."""
    parser.add_argument("--wandb-project", help="also log the stage to a run in this W&B project, with lineage")
    parser.add_argument(
        "--wandb-mode",
        default=WandbTarget.mode,
        help=f"{', '.join(WANDB_MODES)}: W&B mode of that run (default: %(default)s; WANDB_MODE, when set, wins)",
    )
    parser.add_argument("--wandb-group", help="W&B group of that run (a study's runs share its group)")
    parser.add_argument("--wandb-name", help="W&B name of that run (default: W&B's)")


def target_from_args(args: Any) -> WandbTarget | None:
    """The target the W&B options name, or None (the command has none, or no project was given)."""
    project = getattr(args, "wandb_project", None)
    if project is None:
        return None
    return WandbTarget(project, args.wandb_mode, args.wandb_group, args.wandb_name)


def log_finished_stage(kind: str, run_dir: str | os.PathLike, config: Mapping[str, Any], log: StageLog) -> bool:
    """Log a finished stage of `kind` (the job type; a lesion sweep's is `lesion`) to the current target
    (`logging_to`) or to the active W&B run; False when nothing was logged."""
    job_type = "lesion" if kind == "lesion_sweep" else kind
    return log_stage(current_target() or WandbTarget(), job_type, run_dir, config, log)


def log_stage(
    target: WandbTarget, job_type: str, run_dir: str | os.PathLike, config: Mapping[str, Any], log: StageLog
) -> bool:
    """Log a stage's figures (PNG), tables, summary scalars and artifacts to the active W&B run, or to a new run for
    `target` (secrets redacted from its names, config and recorded command line).

    Returns False when nothing was logged: no active run and no project, or the mode is "disabled".
    """
    import wandb

    own_run, mode = wandb.run is None, wandb_mode(target.mode)
    if own_run and (target.project is None or mode == "disabled"):
        return False
    if own_run:
        with redacted_sys_argv():  # W&B records the command line when its run starts
            run = start_run(
                lambda: wandb.init(
                    project=redact(target.project),
                    group=redact(target.group),
                    name=redact(target.name),
                    job_type=job_type,
                    config=redact({**config, **target.labels}),
                    dir=str(run_dir),
                    mode=mode,
                    settings=quiet_settings(),
                )
            )
    else:
        run = wandb.run
    run.log(
        {
            **{f"figures/{name}": wandb.Image(str(path)) for name, path in log.figures.items()},
            **{f"tables/{name}": wandb.Table(dataframe=frame) for name, frame in log.tables.items()},
        }
    )
    run.summary.update(dict(log.summary))
    declare_artifacts(run, log.uses, log.makes)
    if own_run:
        run.finish()
    return True
