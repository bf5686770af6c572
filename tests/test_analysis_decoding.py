"""Decoding with scikit-learn: near-perfect on linearly separable planted features, chance on noise, folds checked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.representations.decoding import decode, fold_splits, headline_layer, summarise
from analysis.representations.settings import DecodingSettings
from common.errors import UserError

CLASSES, PER_CLASS, DIMENSIONS = 10, 20, 40


def planted(signal: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features = signal x a random class mean + unit noise, in (images, 4, 10) maps (flattened by decode)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(CLASSES), PER_CLASS)
    means = rng.standard_normal((CLASSES, DIMENSIONS))
    features = signal * means[labels] + rng.standard_normal((len(labels), DIMENSIONS))
    return features.reshape(len(labels), 4, 10).astype(np.float32), labels


@pytest.mark.parametrize("classifier", ["logistic", "svm"])
def test_separable_planted_features_decode_near_perfectly_and_noise_at_chance(classifier):
    settings = DecodingSettings(classifier=classifier, folds=5)
    folds = decode(*planted(signal=3.0), settings)
    assert len(folds) == 5 and folds["test_images"].sum() == CLASSES * PER_CLASS
    assert folds["accuracy"].mean() >= 0.97
    noise = decode(*planted(signal=0.0), settings)
    assert abs(noise["accuracy"].mean() - 1 / CLASSES) < 0.06


def test_folds_are_stratified_shuffled_and_seeded():
    features, labels = planted(signal=1.0)  # labels sorted by class, as the stored activations are
    splits = fold_splits(labels, 4, seed=1)
    for train, test in splits:  # stratified: each class's 20 images split 5 per fold (KFold shuffled is uneven)
        assert (np.bincount(labels[test], minlength=CLASSES) == PER_CLASS // 4).all()
        assert sorted([*train, *test]) == list(range(len(labels)))
    tests = [test for _, test in splits]
    assert sorted(np.concatenate(tests)) == list(range(len(labels)))
    assert not all((np.diff(test) == 1).all() for test in tests)  # shuffled: not runs of neighbouring images
    again, other = fold_splits(labels, 4, seed=1), fold_splits(labels, 4, seed=2)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(splits, again))
    assert not all(np.array_equal(a, b) for (_, a), (_, b) in zip(splits, other))  # the seed is used
    weak, _ = planted(signal=0.3)  # decoded well short of perfect, so other folds give other accuracies
    first = decode(weak, labels, DecodingSettings(folds=4, seed=1))
    assert first.equals(decode(weak, labels, DecodingSettings(folds=4, seed=1)))
    assert not first["accuracy"].equals(decode(weak, labels, DecodingSettings(folds=4, seed=2))["accuracy"])


def test_standardisation_is_fitted_on_each_training_fold_alone(monkeypatch):
    from sklearn.preprocessing import StandardScaler

    features, labels = planted(signal=1.0)
    fitted_on: list[np.ndarray] = []
    fit = StandardScaler.fit

    def recording_fit(self, x, y=None, **kwargs):
        fitted_on.append(np.asarray(x).copy())
        return fit(self, x, y, **kwargs)

    monkeypatch.setattr(StandardScaler, "fit", recording_fit)
    decode(features, labels, DecodingSettings(folds=4, seed=1))
    flat = features.reshape(len(features), -1)
    expected = [flat[train] for train, _ in fold_splits(labels, 4, seed=1)]
    assert len(fitted_on) == 4 and all(np.array_equal(a, b) for a, b in zip(fitted_on, expected))


def test_too_few_images_per_class_for_the_folds_is_a_clear_error():
    features, labels = planted(signal=1.0)
    keep = np.flatnonzero((labels != 3) | (np.arange(len(labels)) % PER_CLASS < 4))
    with pytest.raises(UserError, match="class 3 has only 4 images for 5 folds; lower --folds to at most 4"):
        decode(features[keep], labels[keep], DecodingSettings(folds=5))
    with pytest.raises(UserError, match="folds must be at least 2, not 1"):
        DecodingSettings(folds=1)


def test_summary_gives_mean_sem_and_chance_per_network_task_and_layer():
    folds = pd.DataFrame(
        {
            "network": "face",
            "task": "object",
            "layer": "fc7",
            "fold": range(4),
            "accuracy": [0.5, 0.6, 0.7, 0.8],
            "train_images": 30,
            "test_images": 10,
            "converged": True,
        }
    )
    [row] = summarise(folds, {"object": 20}, DecodingSettings()).to_dict(orient="records")
    assert row["accuracy"] == pytest.approx(0.65)
    assert row["sem"] == pytest.approx(np.std([0.5, 0.6, 0.7, 0.8], ddof=1) / 2)
    assert row["chance"] == pytest.approx(0.05) and row["images"] == 40 and row["layer_index"] == 14
    assert headline_layer(["conv5_3", "fc7", "output"]) == "fc7" and headline_layer(["conv1_1", "conv4_2"]) == "conv4_2"
