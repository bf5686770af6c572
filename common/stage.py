"""The stage directory: the one way every stage (data synth and build, train, lesion, segregation, activations,
decode, RSA, visualize, data behaviour, a study and its trials) owns its output directory.

A stage's *identity* is every input and setting that changes its result. Its steps, in this order:

1. `check()`: refuse, in one line and creating nothing, a directory that holds another job (its config.json
   records another identity); the same identity resumes.
2. `finished`: manifest.json is written last, so it marks a finished stage; a finished stage returns its results
   without redoing anything (data synth and data build verify their files and repair damaged ones, as documented).
3. `start(arguments)`: create the folder (`prepare_output_dir`), remove the temporary files a killed run left, and
   write config.json: the resolved arguments plus an `identity` key.
4. the stage's own work, each result written atomically (`common.io`), resumable where it is long;
5. `finish(kind, log=..., **fields)`: write manifest.json (versions, seeds, hashes, the caller's fields) last; with
   `log` (a `common.wandb_runs.StageLog`), the stage then logs its W&B run (job type `kind`) to the target set around
   it (`common.wandb_runs.logging_to`), with its config.json as the run config.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.io import as_stored, read_json, remove_temporaries, write_json
from common.layout import CONFIG_FILE, IDENTITY_KEY, MANIFEST_FILE
from common.manifest import write_manifest
from common.output_dir import flatten, prepare_output_dir
from common.wandb_runs import StageLog, log_finished_stage


@dataclass(frozen=True)
class StageDir:
    """One stage's output directory, what defines its job, and how a refused rerun is told to proceed."""

    path: Path
    job: str  # what the stage is called in messages, e.g. "lesion sweep"
    identity: Mapping[str, Any]
    advice: str = "rerun with the same inputs and settings or choose another --out"
    option: str = "--out"  # the option that names the directory, for errors about the path itself
    holds_stages: bool = False  # a study: its trials are stage directories of their own, run by other processes

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config_path(self) -> Path:
        """config.json: the resolved arguments and the identity."""
        return self.path / CONFIG_FILE

    @property
    def manifest_path(self) -> Path:
        """manifest.json, written last."""
        return self.path / MANIFEST_FILE

    def recorded(self) -> dict[str, Any] | None:
        """The config.json this directory holds (arguments and identity), or None."""
        return read_json(self.config_path) if self.config_path.is_file() else None

    def check(self) -> StageDir:
        """UserError, creating nothing, when the directory holds a job whose identity differs from this one (the
        message names the first differing dotted key with both values); returns the stage."""
        recorded = self.recorded()
        if recorded is None:
            return self
        old, new = flatten(recorded.get(IDENTITY_KEY) or {}), flatten(as_stored(self.identity))
        differing = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
        if differing:
            key = differing[0]
            raise UserError(
                f"{self.path} holds a {self.job} with another {key} ({old.get(key)!r}, now {new.get(key)!r}); "
                f"{self.advice}"
            )
        return self

    @property
    def finished(self) -> bool:
        """Whether the stage finished: its manifest, written last, is there."""
        return self.manifest_path.is_file()

    def start(self, arguments: Mapping[str, Any] = {}) -> Path:
        """Check, create the folder, remove a killed run's temporary files (those of its own files alone when it holds
        stages that others may be writing) and record config.json (`arguments` plus the identity); returns the
        folder."""
        self.check()
        path = prepare_output_dir(self.path, self.option)
        remove_temporaries(path, recursive=not self.holds_stages)
        write_json(self.config_path, {**arguments, IDENTITY_KEY: self.identity})
        return path

    def finish(self, kind: str, log: StageLog | None = None, **fields: Any) -> dict[str, Any]:
        """Write the manifest, last: the stage is finished; then, with `log`, log the stage's W&B run. Returns the
        manifest."""
        manifest = write_manifest(self.manifest_path, kind, **fields)
        logging.getLogger(__name__).info("%s finished: %s", self.job, self.path)
        if log is not None:
            log_finished_stage(kind, self.path, self.recorded() or {}, log)
        return manifest
