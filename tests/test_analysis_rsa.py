"""RSA: layer RDMs against scipy and rsatoolbox, comparisons and noise ceilings against hand computations, and the
recovery of the layer whose RDM was planted in synthetic participants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_sweeps import tiny_vgg
from scipy.spatial.distance import pdist, squareform
from scipy.stats import spearmanr

from analysis.representations.activations import forward_layers
from analysis.representations.rsa import compare_with_participants, gram_statistics, noise_ceiling, rdm_from_features
from data_pipeline.synth_behaviour import noisy_participants
from lightning_modules.layer_names import LAYER_NAMES


def upper(rdm: np.ndarray) -> np.ndarray:
    return rdm[np.triu_indices(len(rdm), 1)]


@pytest.mark.parametrize(
    "distance, metric", [("correlation", "correlation"), ("euclidean", "euclidean"), ("cosine", "cosine")]
)
def test_layer_rdms_equal_scipy_distances_in_any_chunking(distance, metric):
    features = np.random.default_rng(0).standard_normal((9, 4, 3, 5)).astype(np.float32) + 0.3
    expected = squareform(pdist(features.reshape(9, -1).astype(np.float64), metric))
    np.testing.assert_allclose(rdm_from_features(features, distance), expected, atol=1e-12)
    whole = gram_statistics(features)
    for chunk in (1, 9 * 7, 10**9):  # one feature, 7 features, everything at once
        for part, reference in zip(gram_statistics(features, chunk_values=chunk), whole):
            np.testing.assert_allclose(part, reference, atol=1e-9)


def test_correlation_rdm_equals_rsatoolbox():
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm

    features = np.random.default_rng(1).standard_normal((7, 30))
    reference = calc_rdm(Dataset(features), method="correlation").get_matrices()[0]
    np.testing.assert_allclose(rdm_from_features(features), reference, atol=1e-12)


def test_a_constant_pattern_has_no_distance_and_its_pairs_are_left_out_of_comparisons():
    rng = np.random.default_rng(2)
    features = rng.standard_normal((6, 20))
    features[2] = 0.0  # a stimulus that silences the layer
    rdm = rdm_from_features(features)
    assert np.isnan(rdm[2, [0, 1, 3, 4, 5]]).all() and np.isnan(rdm[[0, 1, 3, 4, 5], 2]).all() and rdm[2, 2] == 0
    behaviour = noisy_participants(squareform(rng.random(15)), 3, 0.5, seed=0)
    kept = [k for k, (i, j) in enumerate(zip(*np.triu_indices(6, 1))) if 2 not in (i, j)]
    expected = [spearmanr(upper(rdm)[kept], upper(p)[kept]).statistic for p in behaviour]
    np.testing.assert_allclose(compare_with_participants(rdm, behaviour), expected, atol=1e-12)


def test_comparisons_equal_spearman_and_kendall_tau_a_by_hand():
    rng = np.random.default_rng(3)
    model = squareform(rng.random(10))
    participants = np.stack([squareform(rng.random(10)) for _ in range(4)])
    spearman = [spearmanr(upper(model), upper(p)).statistic for p in participants]
    np.testing.assert_allclose(compare_with_participants(model, participants, "spearman"), spearman, atol=1e-12)

    def tau_a(a: np.ndarray, b: np.ndarray) -> float:
        i, j = np.triu_indices(len(a), 1)
        return float(np.sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])) / len(i))

    tau = [tau_a(upper(model), upper(p)) for p in participants]
    np.testing.assert_allclose(compare_with_participants(model, participants, "tau-a"), tau, atol=1e-12)


def ranks(rdm: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(upper(rdm))


def test_noise_ceiling_is_leave_one_out_and_all_participants_by_hand():
    participants = noisy_participants(squareform(np.random.default_rng(4).random(28)), 6, 1.0, seed=1)
    ranked = np.stack([ranks(p) for p in participants])
    lower = np.mean([spearmanr(ranked[i], np.delete(ranked, i, axis=0).mean(0)).statistic for i in range(6)])
    top = np.mean([spearmanr(ranked[i], ranked.mean(0)).statistic for i in range(6)])
    assert noise_ceiling(participants, "spearman") == pytest.approx((lower, top), abs=1e-12)


def test_noise_ceiling_bounds_are_ordered_and_rise_as_noise_falls():
    planted = squareform(np.random.default_rng(5).random(45))
    ceilings = [noise_ceiling(noisy_participants(planted, 12, noise, seed=2)) for noise in (3.0, 1.0, 0.3)]
    for lower, top in ceilings:
        assert lower <= top
    lowers, uppers = zip(*ceilings)
    assert lowers[0] < lowers[1] < lowers[2] and uppers[0] < uppers[1] < uppers[2]
    assert uppers[2] > 0.9


@pytest.fixture(scope="module")
def layer_rdms() -> dict[str, np.ndarray]:
    """Every layer's RDM of a tiny random VGG16 over 20 stimuli drawn from 5 prototypes."""
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.randn(5, 3, 32, 32, generator=generator)
    images = prototypes.repeat_interleave(4, 0) + 0.8 * torch.randn(20, 3, 32, 32, generator=generator)
    with torch.inference_mode():
        outputs = forward_layers(tiny_vgg(seed=1), images, LAYER_NAMES)
    return {layer: rdm_from_features(activation.numpy()) for layer, activation in outputs.items()}


@pytest.mark.parametrize("planted", ["conv2_1", "conv4_3", "fc6"])
def test_rsa_recovers_the_layer_whose_rdm_was_planted_in_the_participants(layer_rdms, planted):
    participants = noisy_participants(layer_rdms[planted], 10, 0.5, seed=3)
    mean = {layer: compare_with_participants(rdm, participants).mean() for layer, rdm in layer_rdms.items()}
    assert max(mean, key=mean.get) == planted
    lower, _ = noise_ceiling(participants)
    assert mean[planted] > lower - 0.05  # the planted layer reaches the participants' ceiling


def test_noise_ceiling_uses_the_pairs_the_model_comparison_uses():
    participants = noisy_participants(squareform(np.random.default_rng(4).random(28)), 6, 1.0, seed=1)
    model = squareform(np.random.default_rng(5).random(28))
    model[2, :] = model[:, 2] = np.nan  # stimulus 2's pattern was constant: its 7 pairs are undefined
    model[2, 2] = 0.0
    kept = np.delete(np.delete(participants, 2, axis=1), 2, axis=2)  # the participants without stimulus 2
    assert noise_ceiling(participants, "spearman", model) == pytest.approx(noise_ceiling(kept, "spearman"), abs=1e-12)
    assert noise_ceiling(participants, "spearman", model) != pytest.approx(noise_ceiling(participants, "spearman"))
    np.testing.assert_allclose(
        compare_with_participants(model, participants),
        compare_with_participants(squareform(upper(np.delete(np.delete(model, 2, 0), 2, 1))), kept),
        atol=1e-12,
    )


def test_participant_bootstrap_interval_of_the_mean():
    from analysis.representations.rsa import participant_interval

    assert participant_interval(np.full(5, 0.3), 200, seed=0) == pytest.approx((0.3, 0.3))
    values = np.random.default_rng(0).normal(0.4, 0.1, size=15)
    low, high = participant_interval(values, 4000, seed=1)
    # the bootstrap's standard error of the mean is the SD (ddof 0) / sqrt(n): about the analytic SEM
    half = 1.96 * values.std() / np.sqrt(len(values))
    assert low < values.mean() < high
    assert (low, high) == pytest.approx((values.mean() - half, values.mean() + half), abs=0.01)
    assert participant_interval(values, 4000, seed=1) == (low, high)  # seeded
