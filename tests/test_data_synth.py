"""The synthetic generator: folder layout, determinism by seed, and domains that differ as the real ones do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import UserError
from data_pipeline.synth import SynthSettings, class_name, generate, render_image

SMALL = dict(
    tasks=("face", "object", "food", "car"),
    classes_per_task=2,
    train_per_class=3,
    test_per_class=2,
    heldout_classes=1,
    size=32,
)


def small(seed: int) -> SynthSettings:
    return SynthSettings(seed=seed, **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def test_layout_and_counts(tmp_path: Path) -> None:
    generate(tmp_path, small(3), workers=2)
    for task in SMALL["tasks"]:
        assert sorted(p.name for p in (tmp_path / task / "train").iterdir()) == [class_name(task, i) for i in range(2)]
        assert sorted(p.name for p in (tmp_path / task / "test").iterdir()) == [class_name(task, i) for i in range(2)]
        assert sorted(p.name for p in (tmp_path / task / "heldout").iterdir()) == [class_name(task, 2)]
        assert len(list((tmp_path / task / "train" / class_name(task, 0)).glob("*.jpg"))) == 3
        assert len(list((tmp_path / task / "heldout" / class_name(task, 2)).glob("*.jpg"))) == 2
    image = Image.open(tmp_path / "car" / "test" / "car_001" / "0001.jpg")
    assert image.size == (32, 32) and image.mode == "RGB"
    assert (tmp_path / "manifest.json").is_file() and (tmp_path / "config.json").is_file()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "a", small(3), workers=2)
    generate(tmp_path / "b", small(3), workers=1)
    generate(tmp_path / "c", small(4), workers=2)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(a) == 4 * (2 * 5 + 2) and a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_resume_keeps_existing_images_and_refuses_other_settings(tmp_path: Path) -> None:
    generate(tmp_path, small(3), workers=2)
    victim = tmp_path / "face" / "train" / "face_000" / "0000.jpg"
    before = victim.read_bytes()
    victim.unlink()
    generate(tmp_path, small(3), workers=2)
    assert victim.read_bytes() == before
    with pytest.raises(UserError, match="holds a synthetic data set with another"):
        generate(tmp_path, small(5), workers=2)


def test_identity_is_fixed_but_images_vary() -> None:
    first, second = render_image(0, "face", 0, "train", 0, 32), render_image(0, "face", 0, "train", 1, 32)
    assert np.array_equal(first, render_image(0, "face", 0, "train", 0, 32))
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 10


def test_unknown_task_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="tasks is 'faces'; valid values: face, object, food, car"):
        generate(tmp_path, SynthSettings(tasks=("faces",)))


def test_face_identity_is_not_told_apart_by_colour() -> None:
    """The colour at the image centre (skin and hair: a coarse cue) decodes object categories but not face identities
    (10 classes, chance 0.1): identity lies in the face's structure."""

    def centre_colour_decoding(task: str) -> float:
        features = np.array(
            [
                [
                    np.median(render_image(0, task, identity, "train", number, 32)[10:22, 10:22].reshape(-1, 3), axis=0)
                    for number in range(16)
                ]
                for identity in range(10)
            ]
        )
        correct = 0
        for held in range(16):  # leave one image of every class out, nearest class-mean colour
            centroids = np.delete(features, held, axis=1).mean(axis=1)
            distances = ((features[:, held, None, :] - centroids[None]) ** 2).sum(axis=-1)
            correct += int((distances.argmin(axis=1) == np.arange(10)).sum())
        return correct / (16 * 10)

    assert centre_colour_decoding("face") < 0.2  # 0.42 when identities had their own skin and hair colours
    assert centre_colour_decoding("object") > 0.35
