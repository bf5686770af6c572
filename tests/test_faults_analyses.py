"""Faults of the analysis stages: `activations`, `decode`, `rsa`, `visualize`, `report` and `figures` killed with
SIGKILL mid-stage resume to the outputs of an uninterrupted run, without redoing the parts they finished. These
stages are too short on tiny networks to hit by time, so each kill lands at a chosen instant: while a named file is
written (whole, under its temporary name) and not yet renamed into place. One local Ray session (2 CPUs) and one
set of untrained tiny networks serve the module; the killed commands join the session with --address."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers_faults import damaged_files, killed_writing, mtimes, run_to_end, specialize, temporaries
from helpers_representation import fake_sweep, session_heldout_data, stimulus_list, untrained_networks

from analysis.segregation.settings import DEFAULT_SCOPE
from common.io import write_json, write_parquet
from lightning_modules.layer_names import CONV_LAYERS
from specialize.cli import main

pytestmark = pytest.mark.slow
WIDTH = 1 / 16


@dataclass(frozen=True)
class Stage:
    """How to run a stage into OUT, where to kill it, and what a rerun must keep and reproduce."""

    args: Callable[[dict, Path], list[object]]  # (inputs, OUT) -> the command's arguments
    kill: tuple[str, int]  # where to kill: (file pattern, nth such file written)
    finished: str  # the file written last: absent after each kill
    kept: Callable[[Path], list[Path]] = lambda out: []  # files a kill leaves finished, which no rerun writes again
    same: tuple[str, ...] = field(default=())  # files equal to the uninterrupted run's


def unit_files(marker: str) -> Callable[[Path], list[Path]]:
    """The files of the finished units under OUT: the folders holding a file matching `marker` (written last)."""
    return lambda out: [path for found in out.glob(marker) for path in found.parent.iterdir() if path.is_file()]


def checkpoints(paths: dict[str, Path]) -> list[str]:
    return [arg for name, path in paths.items() for arg in ("--checkpoint", f"{name}={path}")]


STAGES = {
    "activations": Stage(
        lambda inputs, out: [
            "activations",
            *checkpoints(inputs["networks"]),
            "--data",
            inputs["data"],
            "--split",
            "heldout",
            "--layers",
            "conv5_3",
            "fc7",
            "--out",
            out,
        ],
        kill=("images.parquet", 2),  # 2 units (2 tasks): one finished, the other being marked finished
        finished="manifest.json",
        kept=unit_files("*/*/images.parquet"),
        same=("*/*/*.npy", "*/*/images.parquet"),
    ),
    "decode": Stage(
        lambda inputs, out: [
            "decode",
            *checkpoints(inputs["networks"]),
            "--data",
            inputs["data"],
            "--layers",
            "conv5_3",
            "fc7",
            "--folds",
            3,
            "--out",
            out,
        ],
        kill=("units/*.parquet", 3),  # 4 decodings (2 tasks x 2 layers): two finished
        finished="manifest.json",
        kept=lambda out: [*out.glob("units/*.parquet"), *unit_files("activations/*/*/images.parquet")(out)],
        same=("decoding.parquet", "decoding_folds.parquet", "units/*.parquet", "summary.json"),
    ),
    "rsa": Stage(
        lambda inputs, out: [
            "rsa",
            *checkpoints(inputs["networks"]),
            "--stimuli",
            inputs["behaviour"] / "stimuli.txt",
            "--behaviour",
            inputs["behaviour"],
            "--layers",
            "conv3_1",
            "fc7",
            "--out",
            out,
        ],
        kill=("rsa.parquet", 1),  # the activations extracted, RDMs and per-participant table written
        finished="manifest.json",
        kept=unit_files("activations/*/*/images.parquet"),
        same=("rsa.parquet", "rsa_participants.parquet", "rdms/*/*.npy", "summary.json"),
    ),
    "visualize": Stage(
        lambda inputs, out: [
            "visualize",
            *checkpoints(inputs["networks"]),
            "--layer",
            "conv5_3",
            "--top",
            2,
            "--task",
            "face",
            "--task",
            "object",
            "--sweep",
            inputs["sweep"],
            "--steps",
            10,
            "--natural-images",
            0,
            "--out",
            out,
        ],
        # no natural images: their extraction (analysis.activations, Ray), killed and resumed in the other cases,
        # tripled this case's time (104 s against 30 s)
        kill=("conv5_3_object_images.npy", 1),  # the face group finished, the object group half-written
        finished="manifest.json",
        kept=lambda out: [*out.glob("conv5_3_face*")],
        same=("conv5_3_*.parquet", "conv5_3_*.npy", "conv5_3_*.png"),
    ),
    "report": Stage(
        lambda inputs, out: ["report", inputs["behaviour"], "--out", out / "report.html"],
        kill=("report.html", 1),
        finished="report.html",
        same=("report.html",),
    ),
    "figures": Stage(
        lambda inputs, out: ["figures", *inputs["segregations"], "--out", out / "segregation"],
        kill=("segregation.svg", 1),  # the PNG written, the SVG not yet in place
        finished="segregation.svg",
        same=("segregation.png",),
    ),
}


def planted_segregation(directory: Path, shift: float) -> str:
    """A finished-looking `specialize segregation` output with a planted index per conv layer (what `figures`
    reads: segregation.parquet and summary.json)."""
    rows = [
        {
            "fraction": 0.2,
            "scope": DEFAULT_SCOPE,
            "task_a": "face",
            "task_b": "object",
            "layer": layer,
            "layer_index": index,
            "si": index / 20 + shift,
            "si_low": index / 20 + shift - 0.1,
            "si_high": index / 20 + shift + 0.1,
        }
        for index, layer in enumerate(CONV_LAYERS, start=1)
    ]
    write_parquet(directory / "segregation.parquet", pd.DataFrame(rows))
    write_json(directory / "summary.json", {"fraction": 0.2})
    return f"{directory}={directory.name}"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, ray_cluster) -> dict:
    """The stages' inputs: held-out data, an untrained Dual-task network, behaviour of 4 participants on 12 held-out
    face images (a finished stage, which the report covers), a planted ranking and two planted segregation
    outputs."""
    data = session_heldout_data(tmp_path_factory)
    root = tmp_path_factory.mktemp("faults_analyses")
    networks = untrained_networks(data, root, WIDTH, ("dual",))
    behaviour = root / "behaviour"
    stimuli = stimulus_list(data, root / "list.txt")
    assert main(["data", "behaviour", "--stimuli", str(stimuli), "--out", str(behaviour), "--participants", "4"]) == 0
    return {
        "data": data,
        "networks": networks,
        "behaviour": behaviour,
        "sweep": fake_sweep(root / "sweep", networks["dual"], {"face": [7, 2, 9], "object": [3, 0, 5]}),
        "segregations": [planted_segregation(root / name, shift) for name, shift in (("network", 0.3), ("control", 0))],
        "address": ray_cluster,
    }


def command_args(stage: Stage, inputs: dict, out: Path) -> list[object]:
    ray = ["--address", inputs["address"], "--no-progress"] if "manifest.json" == stage.finished else []
    return [*stage.args(inputs, out), *ray]


def same_file(path: Path, reference: Path) -> bool:
    """Whether a result file holds what the uninterrupted run's does (a report aside from when it was written and
    the output directory its footer's command line names)."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path).equals(pd.read_parquet(reference))
    if path.suffix == ".npy":
        return np.array_equal(np.load(path), np.load(reference))
    if path.suffix == ".html":
        written = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")
        pages = [written.sub(b"T", page.read_bytes()).replace(bytes(page.parent), b"OUT") for page in (path, reference)]
        return pages[0] == pages[1]
    return path.read_bytes() == reference.read_bytes()


def results(directory: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted(path.relative_to(directory) for pattern in patterns for path in directory.glob(pattern))


@pytest.mark.parametrize("name", STAGES)
def test_analysis_stage_killed_mid_stage_resumes_to_the_uninterrupted_run(name, inputs, tmp_path):
    stage = STAGES[name]
    reference, out = tmp_path / "reference", tmp_path / "killed"
    run_to_end(specialize(*command_args(stage, inputs, reference)), timeout=900)
    pattern, nth = stage.kill
    killed_writing(command_args(stage, inputs, out), pattern, nth, timeout=900)
    assert temporaries(out) and not (out / stage.finished).exists() and not damaged_files(out)  # mid-stage
    kept = mtimes(stage.kept(out))
    assert kept or name in ("report", "figures"), f"the kill at {pattern} #{nth} left nothing finished"
    run_to_end(specialize(*command_args(stage, inputs, out)), timeout=900)
    assert mtimes(kept) == kept and not temporaries(out) and not damaged_files(out)
    compared = results(reference, stage.same)
    assert compared and results(out, stage.same) == compared
    assert [path for path in compared if not same_file(out / path, reference / path)] == []
