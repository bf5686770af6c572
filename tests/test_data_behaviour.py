"""Behavioural RDMs and stimulus lists: the documented format, every check as one clear error, synthetic
participants, and image files decoded with exactly the loaders' eval transform."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_data import stored_images
from helpers_representation import session_heldout_data
from PIL import Image
from scipy.spatial.distance import squareform
from scipy.stats import spearmanr

from common.errors import UserError
from data_pipeline.behaviour import read_behaviour, read_stimulus_list, write_behaviour
from data_pipeline.sample import eval_transform, stream_batches, stream_image_files
from data_pipeline.synth_behaviour import BehaviourSettings, generate_behaviour, noisy_participants

STIMULI = ["a.png", "b.png", "c.png", "d.png"]


def rdm(seed: int, n: int = 4) -> np.ndarray:
    return squareform(np.random.default_rng(seed).random(n * (n - 1) // 2))


def behaviour_dir(root: Path, rdms: dict[str, np.ndarray], stimuli: list[str] = STIMULI) -> Path:
    write_behaviour(root, stimuli, rdms)
    return root


def write_csv(path: Path, matrix: np.ndarray, names: list[str] | None = None) -> None:
    lines = [",".join([""] + names)] if names else []
    for index, row in enumerate(matrix):
        lines.append(",".join(([names[index]] if names else []) + [repr(float(v)) for v in row]))
    path.write_text("\n".join(lines) + "\n")


def test_npy_plain_csv_and_labelled_csv_read_alike_in_stimuli_order(tmp_path):
    first, second, third = rdm(0), rdm(1), rdm(2)
    root = behaviour_dir(tmp_path, {"p01": first})
    write_csv(tmp_path / "p02.csv", second)
    order = [2, 0, 3, 1]  # a labelled CSV in another order is put back into stimuli.txt order
    write_csv(tmp_path / "p03.csv", third[np.ix_(order, order)], [STIMULI[i] for i in order])
    (tmp_path / "notes.json").write_text("{}")  # other files are not participants
    behaviour = read_behaviour(root)
    assert behaviour.stimuli == tuple(STIMULI) and behaviour.participants == ("p01", "p02", "p03")
    np.testing.assert_allclose(behaviour.rdms, np.stack([first, second, third]))


def broken(kind: str) -> np.ndarray:
    matrix = rdm(3)
    if kind == "shape":
        return matrix[:3, :3]
    if kind == "asymmetric":
        matrix[0, 2] += 0.5
    if kind == "diagonal":
        matrix[1, 1] = 0.2
    if kind == "nan":
        matrix[1, 3] = matrix[3, 1] = np.nan
    return matrix


@pytest.mark.parametrize(
    "kind, message",
    [
        ("shape", "RDM of shape (3, 3), but stimuli.txt lists 4 stimuli; it must be 4 x 4"),
        ("asymmetric", "not symmetric ('a.png', 'c.png'"),
        ("diagonal", "non-zero diagonal ('b.png' has dissimilarity 0.2 to itself)"),
        ("nan", "NaN or infinite entries (first at 'b.png', 'd.png')"),
    ],
)
def test_each_bad_rdm_is_one_clear_error(tmp_path, kind, message):
    root = behaviour_dir(tmp_path, {"p01": rdm(0), "p02": broken(kind)})
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        read_behaviour(root)
    assert "p02.npy" in str(error.value) and "\n" not in str(error.value)


def test_participants_with_another_stimulus_set_are_refused(tmp_path):
    root = behaviour_dir(tmp_path, {"p01": rdm(0)})
    write_csv(tmp_path / "p02.csv", rdm(1), ["a.png", "b.png", "c.png", "e.png"])
    with pytest.raises(UserError, match="rates another stimulus set than stimuli.txt \\(missing 'd.png'\\)"):
        read_behaviour(root)


@pytest.mark.parametrize(
    "case, message",
    [
        ("one participant", "holds 1 participant RDM\\(s\\)"),
        ("two files", "participant 'p01' has two RDM files"),
        ("no stimuli", "has no stimuli.txt"),
        ("text", "holds a value that is not a number"),
    ],
)
def test_directory_level_problems_are_clear_errors(tmp_path, case, message):
    root = behaviour_dir(tmp_path, {"p01": rdm(0)})
    if case == "two files":
        write_csv(tmp_path / "p01.csv", rdm(0))
    if case == "no stimuli":
        (tmp_path / "stimuli.txt").unlink()
    if case == "text":
        (tmp_path / "p02.csv").write_text("0,1,x,1\n1,0,1,1\n1,1,0,1\n1,1,1,0\n")
    with pytest.raises(UserError, match=message):
        read_behaviour(root)


def test_a_pickled_npy_is_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    root = behaviour_dir(tmp_path, {"p01": rdm(0)})
    np.save(tmp_path / "p02.npy", np.array([Trap(str(marker))], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="not a numeric NPY array"):
        read_behaviour(root)
    assert not marker.exists()


class Trap:
    """An object whose unpickling would create a file."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def png(path: Path, seed: int = 0, size: tuple[int, int] = (20, 14)) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_stimulus_lists_match_names_by_line_or_file_name_in_any_encoding(tmp_path):
    (tmp_path / "imgs").mkdir()
    odd = os.fsdecode(b"caf\xe9.png")  # a Latin-1 file name that is not valid UTF-8
    for index, name in enumerate(["x.png", odd, "y.png"]):
        png(tmp_path / "imgs" / name, index)
    (tmp_path / "other").mkdir()
    png(tmp_path / "other" / "y.png", 5)
    lines = [b"# stimuli", b"imgs/x.png", b"imgs/caf\xe9.png", b"", b"imgs/y.png", b"other/y.png"]
    (tmp_path / "list.txt").write_bytes(b"\n".join(lines) + b"\n")
    stimuli = read_stimulus_list(tmp_path / "list.txt")
    assert stimuli.names == ("imgs/x.png", f"imgs/{odd}", "imgs/y.png", "other/y.png")
    assert stimuli.locate(["x.png", odd, "other/y.png"]) == [0, 1, 3]
    assert stimuli.locate(["../other/y.png"], directory=tmp_path / "behaviour") == [3]  # the same file
    with pytest.raises(UserError, match="'y.png' matches 2 files"):
        stimuli.locate(["y.png"])
    with pytest.raises(
        UserError, match="2 behavioural stimuli are missing from the stimulus list \\(first: 'z.png'\\)"
    ):
        stimuli.locate(["x.png", "z.png", "w.png"])
    images, labels = next(stream_image_files(stimuli.paths, 16))
    assert images.shape == (4, 3, 16, 16) and labels.tolist() == [0, 1, 2, 3]
    (tmp_path / "bad.txt").write_text("imgs/x.png\nimgs/missing.png\n")
    with pytest.raises(UserError, match="1 images of stimulus list .* do not exist \\(first: 'imgs/missing.png'\\)"):
        read_stimulus_list(tmp_path / "bad.txt")


def test_an_undecodable_stimulus_is_a_clear_error(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(UserError, match="image '.*broken.png': truncated or corrupt image"):
        next(stream_image_files([tmp_path / "broken.png"], 16))


@pytest.mark.parametrize("resolution", [32, 24])
def test_image_files_get_exactly_the_loaders_eval_transform(tmp_path_factory, resolution):
    beton = session_heldout_data(tmp_path_factory) / "face" / "heldout.beton"
    stored, _ = stored_images(beton)  # the pixels as stored (raw), as an image file would decode
    loaded = torch.cat([images for images, _ in stream_batches(beton, resolution, batch_size=7)])
    ours = torch.stack([eval_transform(image, resolution) for image in stored])
    torch.testing.assert_close(ours, loaded, atol=1e-6, rtol=0)  # same pixels (one grey level is 0.0078)


def test_synthetic_participants_are_valid_rdms_closer_to_the_planted_one_when_less_noisy():
    planted = rdm(7, n=12)
    correlations = []
    for noise in (2.0, 0.5, 0.1):
        participants = noisy_participants(planted, 5, noise, seed=0)
        for participant in participants:
            assert np.allclose(participant, participant.T) and np.all(np.diag(participant) == 0)
            assert participant.min() >= 0 and participant.max() <= 1
        correlations.append(
            np.mean([spearmanr(squareform(planted), squareform(p, checks=False)).statistic for p in participants])
        )
    assert correlations[0] < correlations[1] < correlations[2] and correlations[2] > 0.95
    with pytest.raises(UserError, match="constant"):
        noisy_participants(np.ones((4, 4)) - np.eye(4), 3, 1.0, seed=0)


def test_generated_behaviour_reads_back_and_its_stimuli_file_is_the_stimulus_list(tmp_path):
    for index, folder in enumerate(["cat", "cat", "dog", "dog", "owl"]):
        (tmp_path / "images" / folder).mkdir(parents=True, exist_ok=True)
        png(tmp_path / "images" / folder / f"{index}.png", index)
    lines = sorted(str(path.relative_to(tmp_path)) for path in (tmp_path / "images").rglob("*.png"))
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    out = generate_behaviour(
        tmp_path / "behaviour", tmp_path / "list.txt", settings=BehaviourSettings(participants=4, noise=0.0, seed=1)
    )
    behaviour = read_behaviour(out)
    assert behaviour.participants == ("participant_1", "participant_2", "participant_3", "participant_4")
    stimuli = read_stimulus_list(out / "stimuli.txt")
    assert [path.resolve() for path in stimuli.paths] == [(tmp_path / line).resolve() for line in lines]
    classes = np.array([Path(line).parent.name for line in lines])
    between = classes[:, None] != classes[None, :]
    assert np.all(behaviour.rdms[:, between] == 1) and np.all(behaviour.rdms[:, ~between] == 0)  # noise 0: the classes
    with pytest.raises(UserError, match="holds a synthetic behaviour directory with another noise \\(0.0, now 0.5\\)"):
        generate_behaviour(
            tmp_path / "behaviour", tmp_path / "list.txt", settings=BehaviourSettings(participants=4, noise=0.5, seed=1)
        )
