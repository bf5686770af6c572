"""Checkpoints are data, never code: a crafted .ckpt whose unpickling would run code (here: create a marker file) is
refused in one line, and the code never runs, by `load_model` (every analysis), `specialize lesion` and by
`specialize train` resuming a run; checkpoints we write load as data only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers_train import session_tiny_data, tiny_config

from common.errors import UserError
from lightning_modules.checkpoint import load_model
from lightning_modules.run_io import SafeCheckpointIO
from lightning_modules.train import train
from specialize.cli import main


class WritesMarker:
    """Unpickling this object creates the file `path`: any code could run in its place."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def crafted(checkpoint: dict, path: Path, marker: Path) -> Path:
    """`checkpoint` with a payload that creates `marker` when unpickled, saved at `path`."""
    torch.save({**checkpoint, "payload": WritesMarker(marker)}, path)
    return path


def test_payload_runs_when_unpickled_as_torch_did_before(tmp_path):
    """The payload is live: loading with weights_only=False (what load_model did) runs it."""
    marker = tmp_path / "ran"
    torch.load(crafted({}, tmp_path / "crafted.ckpt", marker), weights_only=False)
    assert marker.exists()


def test_load_model_and_lesion_refuse_a_crafted_checkpoint(tmp_path, capsys):
    marker = tmp_path / "ran"
    path = crafted({"state_dict": {}, "hyper_parameters": {}}, tmp_path / "crafted.ckpt", marker)
    with pytest.raises(
        UserError, match=r"refused to load checkpoint .*crafted.ckpt.*could run code .*asks for io.open\)"
    ):
        load_model(path)
    assert main(["lesion", "--checkpoint", str(path), "--data", str(tmp_path), "--out", str(tmp_path / "sweep")]) == 2
    error = capsys.readouterr().err.strip()
    assert "refused to load checkpoint" in error and len(error.splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "sweep").exists()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return session_tiny_data(tmp_path_factory)


@pytest.mark.slow
def test_train_refuses_to_resume_from_a_crafted_checkpoint(data_dir, tmp_path, capsys):
    run_dir = train(tiny_config(data_dir, tmp_path, ["trainer.epochs=1", "wandb.mode=disabled", "data.num_workers=1"]))
    last = run_dir / "checkpoints" / "last.ckpt"
    real = torch.load(last, weights_only=True)  # what we write loads as data only
    assert {"state_dict", "optimizer_states", "lr_schedulers", "callbacks", "loops", "hyper_parameters"} <= real.keys()
    marker = tmp_path / "ran"
    crafted(real, last, marker)
    with pytest.raises(UserError, match="refused to load checkpoint"):  # Lightning's own reader, whatever it asks
        SafeCheckpointIO().load_checkpoint(last, weights_only=False)
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "trainer.epochs=2"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after Lightning's warnings
    assert error.startswith(f"specialize train: error: refused to load checkpoint {last}")
    assert not marker.exists()
