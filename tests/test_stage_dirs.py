"""Every stage owns its output directory the one way (`common.stage.StageDir`): rerun with the same settings into a
finished directory, it returns without writing a file again; rerun with a setting that changes its results, it is
refused in one line, exit code 2, nothing written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from helpers_representation import save_checkpoint, session_heldout_data
from helpers_train import ROOT

from data_pipeline.behaviour import write_stimulus_list
from data_pipeline.data_dir import DataDir
from lightning_modules.vgg import vgg16
from specialize.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.ray]
WIDTH = 1 / 16


@dataclass(frozen=True)
class Inputs:
    """What the stages read: a built data directory with held-out classes and its synthetic folders, an untrained
    dual-task checkpoint on it, a stimulus list of held-out faces, and a directory for the stages' inputs."""

    data: Path
    synth: Path
    checkpoint: Path
    stimuli: Path
    root: Path


@dataclass(frozen=True)
class Case:
    """A stage's command (built from the inputs and its output directory), the words that change a setting of its
    results and the message naming it, whether it needs Ray, and the files a finished rerun may write again."""

    command: Callable[[Inputs, Path], list[str]]
    change: list[str]
    refusal: str
    ray: bool = False
    rewritten: tuple[str, ...] = ()
    same: tuple[str, ...] = ()  # words that change a setting of no result


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    data = session_heldout_data(tmp_path_factory)
    root = tmp_path_factory.mktemp("stage_inputs")
    classes = {task: DataDir(data).classes(task) for task in ("face", "object")}
    torch.manual_seed(0)
    model = vgg16(sum(map(len, classes.values())), width=WIDTH, batch_norm=True, dropout=0.0)
    checkpoint = save_checkpoint(model, classes, root / "dual.ckpt", data, WIDTH, batch_norm=True)
    faces = sorted((data.parent / "synth" / "face" / "heldout").rglob("*.jpg"))
    stimuli = write_stimulus_list(root / "stimuli.txt", [path for path in faces if int(path.stem) < 3])
    return Inputs(data, data.parent / "synth", checkpoint, stimuli, root)


def behaviour(inputs: Inputs) -> Path:
    """Synthetic participants for RSA, written once."""
    out = inputs.root / "behaviour"
    assert main(["data", "behaviour", "--stimuli", str(inputs.stimuli), "--out", str(out), "--participants", "3"]) == 0
    return out


def sweep(inputs: Inputs) -> Path:
    """A small lesion sweep of the checkpoint, written once."""
    out = inputs.root / "sweep"
    assert main(LESION(inputs, out)) == 0
    return out


def study_config(inputs: Inputs, out: Path) -> Path:
    """A study of one tiny network on the data, for `--aggregate-only` (no trials run)."""
    config = {
        "name": out.name,
        "output": str(out.parent),
        "controls": {"face": {"config": str(ROOT / "configs" / "tiny_face.yaml"), "data": str(inputs.data)}},
        "analyses": {"lesion": {"enabled": False}, "segregation": {"enabled": False}},
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def LESION(inputs: Inputs, out: Path) -> list[str]:  # noqa: N802 - a command, named as the stage
    options = "--images-per-task 4 --layers conv4_3 conv5_3 --no-progress".split()
    return ["lesion", "--checkpoint", str(inputs.checkpoint), "--data", str(inputs.data), "--out", str(out), *options]


CASES = {  # stages that fork worker processes first: Ray starts with the first stage that needs it
    "data synth": Case(
        lambda i, out: (
            ["data", "synth", "--out", str(out), "--tasks", "car", "--classes-per-task", "2"]
            + "--train-per-class 2 --test-per-class 1 --heldout-classes 0 --size 16 --workers 1".split()
        ),
        ["--seed", "1"],
        "holds a synthetic data set with another seed (0, now 1)",
    ),
    "data build": Case(
        lambda i, out: (
            ["data", "build", "--task", f"face={i.synth / 'face'}", "--task", f"object={i.synth / 'object'}"]
            + ["--out", str(out), *"--test-per-class 2 --val-per-class 1 --write-mode raw --workers 1".split()]
        ),
        ["--val-per-class", "2"],
        "holds a data build with another counts.val (1, now 2)",
    ),
    "data behaviour": Case(
        lambda i, out: ["data", "behaviour", "--stimuli", str(i.stimuli), "--out", str(out), "--participants", "3"],
        ["--noise", "0.5"],
        "holds a synthetic behaviour directory with another noise (1.0, now 0.5)",
    ),
    "train": Case(
        lambda i, out: (
            ["train", "--config", str(ROOT / "configs" / "tiny_face.yaml"), f"data.dir={i.data}"]
            + [
                f"output.root={out.parent}",
                f"output.run_name={out.name}",
                "trainer.epochs=1",
                "data.num_workers=1",
                "data.batch_size=8",
            ]
            + ["trainer.progress_bar=false", "wandb.mode=disabled"]
        ),
        ["optim.lr=0.01"],
        "holds a training run with another optim.lr (0.005, now 0.01)",
        same=("data.num_workers=2",),
    ),
    "study": Case(
        lambda i, out: ["study", "--config", str(study_config(i, out)), "--aggregate-only"],
        ["overrides=[trainer.epochs=2]"],
        "holds a study with another overrides",
        rewritten=("config.json", "manifest.json"),  # --aggregate-only rebuilds what it aggregates
        same=("analyses.lesion.resources.cpus=2", "resources.train.cpus=2"),
    ),
    "lesion": Case(
        LESION,
        ["--ranking", "greedy"],
        "holds a lesion sweep with another greedy_target (None, now 0.2)",  # the first differing key
        ray=True,
        same=("--cpus-per-task", "2", "--max-retries", "1"),
    ),
    "segregation": Case(
        lambda i, out: (
            ["segregation", "--sweep", str(sweep(i)), "--out", str(out), "--bootstraps", "20"]
            + ["--null-partitions", "2"]
        ),
        ["--partition", "halves"],
        "holds a segregation analysis with another partition ('sizes', now 'halves')",
        ray=True,
        same=("--max-retries", "1"),
    ),
    "activations": Case(
        lambda i, out: (
            ["activations", "--checkpoint", str(i.checkpoint), "--data", str(i.data), "--out", str(out)]
            + ["--no-progress"]
        ),
        ["--batch-size", "4"],
        "holds a activation extraction with another batch_size (128, now 4)",
        ray=True,
    ),
    "decode": Case(
        lambda i, out: (
            ["decode", "--checkpoint", str(i.checkpoint), "--data", str(i.data), "--out", str(out)]
            + ["--folds", "2", "--no-progress"]
        ),
        ["--C", "0.5"],
        "holds a decoding with another decoding.regularisation (1.0, now 0.5)",
        ray=True,
    ),
    "rsa": Case(
        lambda i, out: (
            ["rsa", "--checkpoint", str(i.checkpoint), "--stimuli", str(i.stimuli)]
            + ["--behaviour", str(behaviour(i)), "--out", str(out), "--layers", "fc7", "--no-progress"]
        ),
        ["--distance", "euclidean"],
        "holds a RSA with another rsa.distance ('correlation', now 'euclidean')",
        ray=True,
    ),
    "visualize": Case(
        lambda i, out: (
            ["visualize", "--checkpoint", str(i.checkpoint), "--layer", "conv5_3", "--filters", "0,1"]
            + ["--steps", "3", "--data", str(i.data), "--natural-images", "2", "--out", str(out), "--no-progress"]
        ),
        ["--steps", "4"],
        "holds a feature visualisation with another settings.steps (3, now 4)",
        ray=True,
    ),
}


def stamps(directory: Path) -> dict[Path, int]:
    """Modification times of the files under `directory` (W&B's own left out)."""
    return {
        path: path.stat().st_mtime_ns
        for path in directory.rglob("*")
        if path.is_file() and "wandb" not in path.relative_to(directory).parts
    }


@pytest.mark.parametrize("name", list(CASES))
def test_a_finished_stage_returns_and_refuses_other_settings(name, inputs, tmp_path, capsys, request):
    case = CASES[name]
    if case.ray:
        request.getfixturevalue("ray_cluster")
    out = tmp_path / name.replace(" ", "_")
    command = case.command(inputs, out)
    assert main(command) == 0
    assert (out / "manifest.json").is_file() and "identity" in yaml.safe_load((out / "config.json").read_text())
    finished = stamps(out)
    capsys.readouterr()

    assert main(command) == 0  # the same settings: nothing is done again
    again = stamps(out)
    assert sorted(path.name for path in finished if again[path] != finished[path]) == sorted(case.rewritten)
    capsys.readouterr()

    if case.same:  # a setting that changes no result (where it runs): the same job, returned too
        assert main([*command, *case.same]) == 0
        changed = stamps(out)
        assert sorted(path.name for path in again if changed[path] != again[path]) == sorted(case.rewritten)
        again = changed
        capsys.readouterr()
    assert main([*command, *case.change]) == 2  # a setting that changes the results: refused, nothing written
    error = capsys.readouterr().err.strip()
    assert case.refusal in error and len(error.splitlines()) == 1, error
    assert stamps(out) == again
