"""Slurm pre-emption: on SIGUSR1 every rank saves at the same batch boundary, then the job is requeued.

Lightning's own `SLURMEnvironment(auto_requeue=True)` saves the checkpoint inside the signal handler (a
collective that can interleave with the gradient all-reduce of a DDP step) and requeues from there, which
sends SIGTERM into the still-running ranks; with DDP on gloo that hung in our tests. Here the handler only
raises a flag; at the next batch end the ranks agree on it (any rank signalled -> all act), save
`hpc_ckpt_N.ckpt` into the run directory and stop at once by raising `Preempted` (stopping through
`trainer.should_stop` would still run the epoch-end hooks, whose last.ckpt, newer and marked as a finished
epoch, would make the rerun skip the rest of that epoch). `specialize train` exits with REQUEUE_EXIT_CODE; the
job script written by cluster/launch.sh then runs `scontrol requeue`, and the restarted job continues from the
newest checkpoint, the hpc one (`train.latest_checkpoint`).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

REQUEUE_EXIT_CODE = 3
HPC_PREFIX = "hpc_ckpt_"


class Preempted(Exception):
    """Training stopped on SIGUSR1 after saving a checkpoint; the caller should requeue the job."""


def next_hpc_checkpoint(run_dir: Path) -> Path:
    """run_dir/hpc_ckpt_<n+1>.ckpt after the highest existing n (Lightning's naming)."""
    numbers = [
        int(path.stem.removeprefix(HPC_PREFIX))
        for path in run_dir.glob(f"{HPC_PREFIX}*.ckpt")
        if path.stem.removeprefix(HPC_PREFIX).isdigit()
    ]
    return run_dir / f"{HPC_PREFIX}{max(numbers, default=0) + 1}.ckpt"


class SaveOnSignal(pl.Callback):
    """On `signum`, save a checkpoint into `run_dir` at the next batch end (all ranks together) and raise
    `Preempted`."""

    def __init__(self, run_dir: Path, signum: int = signal.SIGUSR1):
        self.run_dir = Path(run_dir)
        self.signum = signum
        self.requested = False
        self._previous: Any = None

    def _request(self, signum: int, frame: Any) -> None:
        self.requested = True

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._previous = signal.signal(self.signum, self._request)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        signal.signal(self.signum, self._previous if self._previous is not None else signal.SIG_DFL)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        saved = next_hpc_checkpoint(self.run_dir)
        trainer.save_checkpoint(saved)
        raise Preempted(f"stopped on SIGUSR1; saved {saved}; requeue the job to continue")
