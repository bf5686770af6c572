"""Synthetic behavioural data for the demo and tests: participants whose RDMs are one planted RDM plus noise.

`generate_behaviour(out, stimulus_list, planted, settings)` writes a behaviour directory (format in
`data_pipeline.behaviour`) for the images of a stimulus list. Each participant's RDM is the planted RDM's
off-diagonal entries, z-scored, plus independent Gaussian noise of standard deviation `noise` per pair, then
scaled to [0, 1] (a monotone map: rank and Pearson comparisons are unchanged), symmetric with a zero diagonal.
The planted RDM is either the stimuli's class structure (0 within a class, 1 between; a stimulus' class is the
folder its image lies in) or any N x N RDM in the list's order, such as a network layer's RDM written by
`specialize rsa` (rdms/<network>/<layer>.npy). Lives here, beside the other synthetic data, because it needs
nothing but the stimulus list and an RDM; planting a layer's RDM is the caller's choice.

The directory's stimuli.txt names the images by their paths relative to it, so it also serves as the stimulus
list of `specialize rsa --stimuli`. The planted RDM is kept in truth/planted.npy (outside the participants).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.io import atomic_path, file_sha256
from common.stage import StageDir
from common.typed_config import check_at_least
from data_pipeline.behaviour import checked_rdm, read_stimulus_list, write_behaviour

PLANTED_FILE = Path("truth") / "planted.npy"


def class_rdm(paths: list[Path]) -> np.ndarray:
    """0 between images of the same class (the same folder), 1 between classes; UserError when all share one."""
    classes = np.array([path.parent.name for path in paths])
    if len(set(classes)) < 2:
        raise UserError(
            "every stimulus lies in one folder, so the class RDM is constant; choose stimuli of two or "
            "more classes (class folders) or plant an RDM file"
        )
    return (classes[:, None] != classes[None, :]).astype(np.float64)


@dataclass(frozen=True)
class BehaviourSettings:
    """The synthetic participants: how many, how noisy their judgements (the noise's sd relative to the planted
    RDM's), and the seed of the noise."""

    participants: int = 14  # the paper's face group
    noise: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_at_least("participants", self.participants, 2)
        check_at_least("noise", self.noise, 0)


def noisy_participants(planted: np.ndarray, participants: int, noise: float, seed: int) -> np.ndarray:
    """(participants, N, N) RDMs: the planted RDM's z-scored upper triangle plus N(0, noise^2) per pair, in [0, 1]."""
    upper = np.triu_indices(len(planted), 1)
    signal = planted[upper]
    if signal.std() == 0:
        raise UserError("the planted RDM is constant; plant one whose dissimilarities differ")
    signal = (signal - signal.mean()) / signal.std()
    rng = np.random.default_rng(seed)
    rdms = np.zeros((participants, *planted.shape))
    for rdm in rdms:
        values = signal + noise * rng.standard_normal(len(signal))
        rdm[upper] = (values - values.min()) / (values.max() - values.min())
        rdm += rdm.T
    return rdms


def generate_behaviour(
    out: str | os.PathLike,
    stimulus_list: str | os.PathLike,
    planted: str | os.PathLike | None = None,
    settings: BehaviourSettings = BehaviourSettings(),
) -> Path:
    """Write a synthetic behaviour directory for the images of `stimulus_list` into `out`; returns `out`.

    `planted`: an N x N RDM file (.npy or .csv, rows in the list's order), or None for the class structure.
    Refuses a directory that holds other synthetic data; a finished one is returned as it is.
    """
    stimuli = read_stimulus_list(stimulus_list)
    stage = StageDir(
        Path(out),
        "synthetic behaviour directory",
        {
            "stimulus_list": str(Path(stimulus_list).resolve()),
            "stimulus_list_sha256": file_sha256(stimulus_list),
            "planted": "classes" if planted is None else file_sha256(planted),
            **asdict(settings),
        },
        "choose another --out",
    ).check()
    if stage.finished:
        return stage.path
    names = [os.path.relpath(path, stage.path) for path in stimuli.paths]
    rdm = class_rdm(list(stimuli.paths)) if planted is None else checked_rdm(Path(planted), names)
    rdms = noisy_participants(rdm, settings.participants, settings.noise, settings.seed)
    out = stage.start({"planted_file": None if planted is None else str(Path(planted).resolve())})
    width = len(str(settings.participants))
    write_behaviour(out, names, {f"participant_{i + 1:0{width}d}": r for i, r in enumerate(rdms)})
    with atomic_path(out / PLANTED_FILE) as tmp, open(tmp, "wb") as handle:
        np.save(handle, rdm)
    stage.finish(
        "synthetic_behaviour",
        seed=settings.seed,
        participants=settings.participants,
        noise=settings.noise,
        stimuli=len(names),
        stimulus_list_sha256=stage.identity["stimulus_list_sha256"],
    )
    return out
