"""The stages of a network, each run from typed settings: the one pipeline behind a study's trials
(`specialize.study`, in Ray Tune) and the demo (`specialize.demo`, in its own process).

Every function runs one stage into the directory its single command writes (a stage directory: `common.stage`), so
each resumes after a kill and a finished one returns its results without redoing them:

    synthetic_data   `data synth`, `data build` (and `data behaviour`)   -> images/, data/ (stimuli.txt, behaviour/)
    train            `specialize train`                                  -> its run directory
    test_accuracy    test top-1 of the analysed checkpoint (Fig. 1C)     -> accuracy/
    lesion           `specialize lesion`                                 -> lesion/
    segregation      `specialize segregation` (and `--random-tasks`)     -> segregation/ (segregation_random/)
    decode, rsa      `specialize decode`, `specialize rsa`               -> decode/, rsa/
    visualize        `specialize visualize --top N --task ... --sweep`   -> visualize/
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.layout import BEHAVIOUR_DIR, CONTROL_DIR, DATA_DIR, IMAGES_DIR, SEGREGATION_DIR, STIMULI_FILE
from common.typed_config import part_of
from common.wandb_runs import current_target, logging_to
from specialize.study_config import (
    DecodingStage,
    RSAStage,
    SegregationStage,
    StudyConfig,
    StudyData,
    VisualizeStage,
)

if TYPE_CHECKING:
    import pandas as pd

    from analysis.representations.activations import Network
    from lightning_modules.config import TrainConfig
    from sweeps.distributed import SweepResult
    from sweeps.settings import SweepSettings


def synthetic_data(out: Path, data: StudyData) -> Path:
    """The study's synthetic image folders (out/images) built into a data directory (out/data), and its synthetic
    participants (out/stimuli.txt, out/behaviour) when asked for; returns the data directory."""
    from data_pipeline.build import build_dataset
    from data_pipeline.synth import generate

    images, data_dir = out / IMAGES_DIR, out / DATA_DIR
    generate(images, data.synth)
    build_dataset({task: images / task for task in data.synth.tasks}, data_dir, data.build)
    if data.behaviour is not None:
        synthetic_participants(out, data)
    return data_dir


def synthetic_participants(out: Path, data: StudyData) -> Path:
    """Participants who judge the first held-out images of each held-out class of a task (out/behaviour, its
    stimulus list out/stimuli.txt); returns the behaviour directory."""
    from data_pipeline.behaviour import write_stimulus_list
    from data_pipeline.synth_behaviour import BehaviourSettings, generate_behaviour

    behaviour = data.behaviour
    images = sorted((out / IMAGES_DIR / behaviour.task / "heldout").rglob("*.jpg"))
    chosen = [path for path in images if int(path.stem) < behaviour.images_per_class]
    stimuli = write_stimulus_list(out / STIMULI_FILE, chosen)
    return generate_behaviour(out / BEHAVIOUR_DIR, stimuli, settings=part_of(behaviour, BehaviourSettings))


def behaviour_inputs(study: StudyConfig) -> tuple[Path, Path]:
    """RSA's stimulus list and behaviour directory: the RSA stage's own, or the study's synthetic participants'."""
    rsa = study.analyses.rsa
    if rsa.behaviour:
        return Path(rsa.stimuli), Path(rsa.behaviour)
    behaviour = study.out_dir / BEHAVIOUR_DIR
    return behaviour / STIMULI_FILE, behaviour


def train(config: TrainConfig, callbacks: Sequence[Any] = ()) -> Path:
    """Train (or continue, or return) the run `config` describes; its run directory."""
    from lightning_modules.train import train as train_run

    return train_run(config, callbacks)


def test_accuracy(checkpoint: Path, data_dir: Path, out: Path) -> pd.DataFrame:
    """Test top-1 per task with its bootstrap interval (`analysis.accuracy`)."""
    from analysis.accuracy import run_test_accuracy

    return run_test_accuracy(checkpoint, data_dir, out)


def lesion(checkpoint: Path, data_dir: Path, out: Path, settings: SweepSettings, progress: bool) -> SweepResult:
    """The lesion sweep of a checkpoint (`specialize lesion`)."""
    from sweeps.distributed import run_sweep
    from sweeps.settings import SweepSettings

    return run_sweep(checkpoint, data_dir, out, part_of(settings, SweepSettings), progress=progress)


def segregation(sweep_dir: Path, data_dir: Path, out: Path, stage: SegregationStage) -> dict[str, dict[str, Any]]:
    """The segregation analysis of a sweep into out/segregation (with the stage's permutation null) and, when the
    stage asks for it, its random-task control (partition 1 of the null, analysed as the tasks) into
    out/segregation_random (W&B runs named as the current target and `<name>-random`); directory name
    -> summary."""
    from analysis.segregation.run import run_segregation
    from analysis.segregation.settings import SegregationSettings

    settings = part_of(stage, SegregationSettings)
    summaries = {SEGREGATION_DIR: run_segregation(sweep_dir, out / SEGREGATION_DIR, data_dir, settings)}
    if stage.control:
        target = current_target()
        control = dataclasses.replace(target, name=f"{target.name}-random") if target and target.name else target
        with logging_to(control):
            partition_1 = dataclasses.replace(settings, random_tasks=True, null_partitions=0)
            summaries[CONTROL_DIR] = run_segregation(sweep_dir, out / CONTROL_DIR, data_dir, partition_1)
    return summaries


def decode(networks: Sequence[Network], data_dir: Path, out: Path, stage: DecodingStage) -> pd.DataFrame:
    """Decoding of the held-out classes from the networks (`specialize decode`); the summary table."""
    from analysis.representations.decoding import run_decoding
    from analysis.representations.settings import DecodingSettings

    return run_decoding(networks, data_dir, out, part_of(stage, DecodingSettings), progress=False)


def rsa(networks: Sequence[Network], stimuli: Path, behaviour: Path, out: Path, stage: RSAStage) -> pd.DataFrame:
    """RSA of the networks' layers against behaviour (`specialize rsa`); the summary table."""
    from analysis.representations.rsa import run_rsa
    from analysis.representations.settings import RSASettings

    return run_rsa(networks, stimuli, behaviour, out, part_of(stage, RSASettings), progress=False)


def visualize(
    network: Network, tasks: Sequence[str], sweep_dir: Path, data_dir: Path, out: Path, stage: VisualizeStage
) -> dict[str, pd.DataFrame]:
    """Each task's top-ranked filters of the stage's layer in a sweep, visualised (`specialize visualize`)."""
    from analysis.representations.settings import VisualizeSettings
    from analysis.representations.visualize import run_visualize, visualized_layer

    return run_visualize(
        network,
        visualized_layer(stage.layer, network),
        out,
        top=stage.top,
        tasks=tasks,
        sweep_dir=sweep_dir,
        data_dir=data_dir,
        settings=part_of(stage, VisualizeSettings),
        progress=False,
    )
