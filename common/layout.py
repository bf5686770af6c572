"""Names of the files and folders that stages and studies write, defined once (the stage directory, training runs,
a study's trials, the demo); `cluster/launch.sh` asks the CLI for them (`specialize cluster plan`).

    <stage directory>/config.json, manifest.json          every stage (`common.stage.StageDir`)
    <training run>/checkpoints/best.ckpt, last.ckpt          `specialize train`
    <study>/trials/<network>-seed<N>/trial.json              a study's trial and its final metrics
    <study or demo>/{images,data,stimuli.txt,behaviour}      synthetic data a study builds itself
    <trial or demo>/{train,lesion,segregation,segregation_random,decode,rsa,visualize}   a network's stages
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_FILE = "config.json"  # resolved arguments, and the identity under IDENTITY_KEY
IDENTITY_KEY = "identity"
MANIFEST_FILE = "manifest.json"  # written last: the stage is finished

CHECKPOINT_DIR = "checkpoints"
CHECKPOINTS = ("best", "last")  # best: lowest validation loss; last: the end of the newest epoch
SEED_SUFFIX = "-seed"

TRIALS_DIR = "trials"
TRIAL_FILE = "trial.json"
TRAIN_DIR = "train"
ACCURACY_DIR = "accuracy"  # test accuracy of the analysed checkpoint
LESION_DIR = "lesion"
SEGREGATION_DIR = "segregation"
CONTROL_DIR = "segregation_random"  # the random-task control of the segregation analysis
DECODE_DIR = "decode"
RSA_DIR = "rsa"
VISUALIZE_DIR = "visualize"

IMAGES_DIR = "images"  # synthetic image folders
DATA_DIR = "data"  # the built data directory
STIMULI_FILE = "stimuli.txt"  # the stimulus list synthetic behaviour is drawn for
BEHAVIOUR_DIR = "behaviour"


def checkpoint_path(run_dir: str | os.PathLike, which: str = "best") -> Path:
    """A training run's checkpoint: `best` or `last`."""
    return Path(run_dir) / CHECKPOINT_DIR / f"{which}.ckpt"


def seeded_name(name: str, seed: int | str) -> str:
    """`<name>-seed<N>`: a study's trial of a network, or a training run of one seed of a job array."""
    return f"{name}{SEED_SUFFIX}{seed}"
