"""Process pools that a parent's signal handlers cannot hang."""

from __future__ import annotations

import multiprocessing
import signal
from multiprocessing.pool import Pool


def _default_signals() -> None:
    """Pool worker initializer: SIGTERM and SIGINT back to their default actions."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def fork_pool(workers: int) -> Pool:
    """A pool of `workers` forked processes whose SIGTERM ends them. Forked workers inherit the parent's signal
    handlers; one that only records the signal (Lightning's, the pre-emption handler) made `Pool.terminate`, which
    closing a pool early calls, wait for ever."""
    return multiprocessing.get_context("fork").Pool(workers, initializer=_default_signals)
