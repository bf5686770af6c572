"""The console a person reads: the project's messages through `logging` in one plain format on stderr (results stay on
stdout), third-party noise that tells the user nothing silenced (Lightning's hints and device lines, its internal
deprecation warnings, W&B's banners and summary blocks, Ray's token-authentication notice), real warnings kept, and
progress bars only on a terminal (elsewhere each stage says one line when it finishes). `specialize --verbose` brings
everything back; the choice is handed to subprocesses and Ray workers through SPECIALIZE_VERBOSE."""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings

VERBOSE_VARIABLE = "SPECIALIZE_VERBOSE"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"
# Lightning's informational lines (device availability, tips, checkpoint restores) go through these loggers; of them,
# only warnings and the lines that tell a cluster user something are kept: a run resumed from a checkpoint (after a
# requeue) and the distributed set-up (backend, ranks joined)
QUIET_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")
KEPT_INFO = ("Restoring states from the checkpoint path", "distributed_backend=")
# warnings that carry no information for a user of this project
NOISE_WARNINGS = (
    r"The `srun` command is available on your system but is not used",  # training runs under srun when it should
    r"The number of training batches .* is smaller than the logging interval",  # the project sets the interval
)
LIBRARY_MODULES = r"(pytorch_lightning|lightning_fabric|lightning_utilities|torchmetrics)(\..*)?"
# Ray 2.60 warns at each local ray.init that it turned on token authentication, its default (set RAY_AUTH_MODE to
# choose, which also silences it); its warning that authentication is off is kept
RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
RAY_AUTH_NOTICE = "Token authentication is enabled for this Ray cluster"


def verbose() -> bool:
    """Whether the console shows everything (`--verbose`, here or in the process that started this one)."""
    return os.environ.get(VERBOSE_VARIABLE) == "1"


def setup_console(verbose_console: bool = False) -> None:
    """Configure logging and warnings for a command: one plain format, noise silenced unless `verbose_console`."""
    if verbose_console:
        os.environ[VERBOSE_VARIABLE] = "1"
    loud = verbose()
    logging.basicConfig(level=logging.DEBUG if loud else logging.INFO, format=FORMAT, datefmt=DATE_FORMAT, force=True)
    if loud:
        return
    os.environ.setdefault("WANDB_SILENT", "true")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).addFilter(informative)
    logging.getLogger(RAY_AUTH_LOGGER).addFilter(lambda record: RAY_AUTH_NOTICE not in str(record.msg))
    for message in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=LIBRARY_MODULES)
    warnings.filterwarnings("ignore", category=FutureWarning, module=LIBRARY_MODULES)


def informative(record: logging.LogRecord) -> bool:
    """Whether a record of Lightning's informational loggers is shown: warnings, and the lines in KEPT_INFO."""
    return record.levelno >= logging.WARNING or any(kept in str(record.msg) for kept in KEPT_INFO)


def on_terminal() -> bool:
    """Whether progress bars are drawn: stderr is a terminal (a log file gets one line per stage instead)."""
    return sys.stderr.isatty()


def hidden(progress: bool) -> bool | None:
    """tqdm's `disable` for a bar the caller wants (`progress`): None (drawn on a terminal only) or True."""
    return None if progress else True


class ProgressLines:
    """Off a terminal, where no bar is drawn, a line at most once a minute saying how far a long loop is."""

    def __init__(self, description: str, total: int, unit: str, done: int = 0, seconds: float = 60.0):
        self.description, self.total, self.unit, self.done, self.seconds = description, total, unit, done, seconds
        self.shown = not on_terminal()
        self.last = time.monotonic()

    def update(self, count: int) -> None:
        """Count `count` more done; say so when a minute has passed since the last line."""
        self.done += count
        if self.shown and time.monotonic() - self.last >= self.seconds:
            self.last = time.monotonic()
            logging.getLogger("specialize").info("%s: %d of %d %ss", self.description, self.done, self.total, self.unit)
