"""Tests across seeds with numbers worked by hand: paired difference, its t-interval, the sign-flip p-value and the
combination of per-seed p-values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.inference import combine_p_values, paired_difference, sign_flip_p_value, t_half_width


def test_paired_difference_of_planted_seeds_matches_the_hand_worked_numbers() -> None:
    network, null = np.array([0.5, 0.6, 0.7]), np.array([0.1, 0.1, 0.1])
    result = paired_difference(network, null)
    # differences 0.4, 0.5, 0.6: mean 0.5, SD 0.1; t(0.975, 2) = 4.302652729911275 (tables: 4.303)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # 0.24841...
    assert result["n"] == 3
    assert result["mean_difference"] == pytest.approx(0.5)
    assert result["sd_difference"] == pytest.approx(0.1)
    assert (result["low"], result["high"]) == pytest.approx((0.5 - half, 0.5 + half))
    assert result["low"] == pytest.approx(0.25158, abs=1e-5)
    # all three differences positive: of the 8 sign patterns only the observed one has a mean >= 0.5
    assert result["p_sign_flip"] == pytest.approx(1 / 8)


def test_sign_flip_counts_every_pattern_at_least_as_large_as_observed() -> None:
    # differences 0.3, -0.1, 0.2 (sum 0.4). The 8 sign patterns applied to them, as signs of (0.3, -0.1, 0.2), give
    # sums +++ 0.4, ++- 0.0, +-+ 0.6, +-- 0.2, -++ -0.2, -+- -0.6, --+ 0.0, --- -0.4: two (0.4, 0.6) reach 0.4.
    assert sign_flip_p_value(np.array([0.3, -0.1, 0.2])) == pytest.approx(2 / 8)
    assert sign_flip_p_value(np.ones(5)) == pytest.approx(1 / 32)  # five seeds: the least p is 2^-5 < 0.05
    assert sign_flip_p_value(np.ones(4)) == pytest.approx(1 / 16)  # four cannot reach 0.05
    assert math.isnan(sign_flip_p_value(np.array([np.nan])))


def test_sign_flip_beyond_the_exact_limit_samples_patterns_close_to_the_exact_value() -> None:
    from itertools import product

    values = np.random.default_rng(0).normal(0.3, 1.0, size=17)  # one more than the exact limit
    exact = np.mean([np.dot(signs, values) >= values.sum() - 1e-12 for signs in product((1, -1), repeat=17)])
    sampled = sign_flip_p_value(values)
    assert sampled == sign_flip_p_value(values)  # seeded: the same patterns every time
    assert sampled == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 65536))
    assert 0.02 < exact < 0.5


def test_fisher_and_stouffer_combinations_match_the_hand_worked_numbers() -> None:
    p = np.array([0.01, 0.02, 0.05])
    # Fisher: X = -2 ln(0.01 x 0.02 x 0.05) = -2 ln(1e-5); with 6 degrees of freedom (even) the chi^2 tail is
    # exp(-X/2) (1 + X/2 + (X/2)^2 / 2) = 1e-5 (1 + 11.5129 + 66.2737) = 7.8787e-4
    half = math.log(1e5)
    assert combine_p_values(p, "fisher") == pytest.approx(1e-5 * (1 + half + half**2 / 2))
    # Stouffer: z = (2.3263 + 2.0537 + 1.6449) / sqrt(3) = 3.4786; p = 1 - Phi(3.4786) = 2.52e-4
    z = (2.326347874 + 2.053748911 + 1.644853627) / math.sqrt(3)
    assert combine_p_values(p, "stouffer") == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)))
    assert combine_p_values(np.array([0.5, np.nan]), "fisher") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="fisher"):
        combine_p_values(p, "tippett")


def test_t_half_width_is_none_for_one_seed() -> None:
    widths = t_half_width(np.array([0.1, 0.1]), np.array([1, 3]))
    assert np.isnan(widths[0]) and widths[1] == pytest.approx(4.302652729911275 * 0.1 / math.sqrt(3))
