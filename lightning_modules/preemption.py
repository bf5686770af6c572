"""Slurm pre-emption: on SIGUSR1 every rank saves at the same batch boundary, then the job is requeued.

Lightning's own `SLURMEnvironment(auto_requeue=True)` saves the checkpoint inside the signal handler (a
collective that can interleave with the gradient all-reduce of a DDP step) and requeues from there, which
sends SIGTERM into the still-running ranks; with DDP on gloo that hung in our tests. Here the handler only
raises a flag; at the next batch end the ranks agree on it (any rank signalled -> all act), save
`hpc_ckpt_N.ckpt` into the run directory and stop at once by raising `Preempted` (stopping through
`trainer.should_stop` would still run the epoch-end hooks, whose last.ckpt, newer and marked as a finished
epoch, would make the rerun skip the rest of that epoch; a signal at an epoch's last batch is acted on one batch
later, see `SaveOnSignal.on_train_batch_end`). Once the new checkpoint is complete, rank 0 deletes the
older hpc ones: a run continues from the newest only, and each holds the whole training state (about 0.5 GB at
paper scale). `specialize train` exits with REQUEUE_EXIT_CODE; the job script written by cluster/launch.sh then
runs `scontrol requeue` (naming an array's task as ARRAYJOB_INDEX), and the restarted job continues from the
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


def hpc_checkpoints(run_dir: Path) -> dict[int, Path]:
    """The SIGUSR1 checkpoints in `run_dir` by number: {n: run_dir/hpc_ckpt_<n>.ckpt} (Lightning's naming)."""
    return {
        int(path.stem.removeprefix(HPC_PREFIX)): path
        for path in run_dir.glob(f"{HPC_PREFIX}*.ckpt")
        if path.stem.removeprefix(HPC_PREFIX).isdigit()
    }


def next_hpc_checkpoint(run_dir: Path) -> Path:
    """run_dir/hpc_ckpt_<n+1>.ckpt after the highest existing n."""
    return run_dir / f"{HPC_PREFIX}{max(hpc_checkpoints(run_dir), default=0) + 1}.ckpt"


def remove_older_hpc_checkpoints(newest: Path) -> None:
    """Delete the SIGUSR1 checkpoints numbered below `newest`, once `newest` is a complete file (it was written
    atomically and flushed to disk; a save that failed raised before this is called, keeping the older ones)."""
    from lightning_modules.checkpoint import is_complete_checkpoint

    if not is_complete_checkpoint(newest):
        return
    number = int(newest.stem.removeprefix(HPC_PREFIX))
    for older, path in hpc_checkpoints(newest.parent).items():
        if older < number:
            path.unlink(missing_ok=True)


class SaveOnSignal(pl.Callback):
    """On `signum`, save a checkpoint into `run_dir` at the next batch end (all ranks together), delete the older
    ones and raise `Preempted`."""

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
        # Not at an epoch's last batch: Lightning (2.6) restores a checkpoint saved there without starting the next
        # epoch in its progress, and a checkpoint saved in that next epoch then resumes one batch early (one batch
        # trained twice). The epoch ends as usual (validation, last.ckpt) and the save happens one batch into the
        # next; in the last epoch the run simply finishes.
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        saved = next_hpc_checkpoint(self.run_dir)
        trainer.save_checkpoint(saved)  # every rank takes part; rank 0 writes it
        if trainer.is_global_zero:
            remove_older_hpc_checkpoints(saved)
        raise Preempted(f"stopped on SIGUSR1; saved {saved}; requeue the job to continue")
