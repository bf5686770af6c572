"""Pre-emption checkpoints (lightning_modules/preemption.py): SIGUSR1 saves hpc_ckpt_<n+1> and only then deletes the
older ones; a save that fails (a full disk) keeps them; a signal at an epoch's last batch is acted on one batch
later. The whole path under Slurm, requeues included, is in tests/test_cluster_slurm.py (the job array test)."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lightning_modules.preemption import Preempted, SaveOnSignal, remove_older_hpc_checkpoints
from lightning_modules.run_io import SafeCheckpointIO


class Trainer:
    """What SaveOnSignal uses of Lightning's Trainer, on one process: the ranks' vote, where the epoch is, the save,
    rank 0."""

    is_global_zero = True
    strategy = SimpleNamespace(reduce_boolean_decision=lambda decision, all: decision)

    def __init__(self, disk_full: bool = False, last_batch: bool = False):
        self.disk_full = disk_full
        self.fit_loop = SimpleNamespace(
            epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(is_last_batch=last_batch))
        )

    def save_checkpoint(self, path: Path) -> None:
        if self.disk_full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 7}, path)


def preempt(run_dir: Path, trainer: Trainer) -> None:
    """SIGUSR1 to this process, then the next batch end."""
    callback = SaveOnSignal(run_dir)
    callback.setup(trainer, None, "fit")
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        with pytest.raises(Preempted):
            callback.on_train_batch_end(trainer, None)
    finally:
        callback.teardown(trainer, None, "fit")


def test_each_preemption_keeps_only_the_newest_hpc_checkpoint(tmp_path):
    preempt(tmp_path, Trainer())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hpc_ckpt_1.ckpt"]
    preempt(tmp_path, Trainer())  # the rerun, pre-empted again
    preempt(tmp_path, Trainer())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hpc_ckpt_3.ckpt"]
    assert torch.load(tmp_path / "hpc_ckpt_3.ckpt", weights_only=True)["global_step"] == 7


def test_a_failed_save_keeps_the_older_checkpoint(tmp_path):
    preempt(tmp_path, Trainer())
    callback = SaveOnSignal(tmp_path)
    callback.requested = True
    with pytest.raises(OSError, match="No space left"):
        callback.on_train_batch_end(Trainer(disk_full=True), None)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hpc_ckpt_1.ckpt"]  # still there to continue from


def test_a_newest_checkpoint_that_is_not_complete_deletes_nothing(tmp_path):
    preempt(tmp_path, Trainer())
    (tmp_path / "hpc_ckpt_2.ckpt").write_bytes(b"PK\x03\x04 cut short")
    remove_older_hpc_checkpoints(tmp_path / "hpc_ckpt_2.ckpt")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hpc_ckpt_1.ckpt", "hpc_ckpt_2.ckpt"]


def test_a_signal_at_an_epochs_last_batch_saves_at_the_next_batch(tmp_path):
    """Lightning restores a checkpoint from an epoch's last batch so that the next pre-emption's checkpoint resumes
    one batch early: in-process, pre-empting at step 23 (the last of epoch 1, 12 steps an epoch) and then at step 24
    ended 4 epochs at global step 49 instead of 48; deferring the save gives 48."""
    callback = SaveOnSignal(tmp_path)
    callback.requested = True
    callback.on_train_batch_end(Trainer(last_batch=True), None)  # the epoch's last batch: nothing yet
    assert not list(tmp_path.iterdir())
    with pytest.raises(Preempted):
        callback.on_train_batch_end(Trainer(), None)  # one batch into the next epoch
    assert [path.name for path in tmp_path.iterdir()] == ["hpc_ckpt_1.ckpt"]
