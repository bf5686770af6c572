"""Tests across independently trained networks (seeds): does an effect hold across seeds, not only in one network?

- `t_half_width`: the half-width of the t-interval of a mean across n seeds, t(1/2 + level/2, n - 1) x SD / sqrt(n)
  (assumes the seeds' values are independent draws from a roughly normal distribution; none with one seed).
- `paired_difference`: per seed the network's index minus its null (the mean of its null partitions, or its random-
  task control), with the mean difference, its t-interval, and the exact sign-flip permutation p-value.
- `sign_flip_p_value`: under the null hypothesis that a seed's difference is as likely positive as negative
  (symmetric about 0; no normality assumed), every one of the 2^n sign patterns is equally likely; p is the share of
  them whose mean difference is at least the observed one (one-sided, "greater"), the observed pattern included.
  Exact: all 2^n patterns are enumerated (n <= EXACT_SIGN_FLIPS_UP_TO seeds; beyond, SIGN_FLIP_SAMPLES random
  patterns, seeded, with the observed one counted as in `null.permutation_p_value`). Its least value is 2^-n: five
  seeds are the fewest that can give p < 0.05 (1/32 = 0.031); four can give no less than 0.0625.
- `combine_p_values`: the per-seed permutation p-values of one layer in one number: Fisher (-2 sum ln p ~ chi^2 with
  2n degrees of freedom, the default: sensitive to one strong seed) or Stouffer (sum of z-scores / sqrt(n): weighs
  seeds equally). Both assume independent, uniformly distributed p-values under the null; permutation p-values are
  discrete and never below 1/(1 + P), which makes the combination conservative.
- `AggregateSettings`: a study's `aggregate` section; `bootstrap: hierarchical` adds to the t-interval of each mean
  index across seeds a three-level bootstrap interval (seeds, then classes, then images: `analysis.seeds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from analysis.bootstrap import DEFAULT_RESAMPLES
from common.typed_config import check_at_least, check_choice

EXACT_SIGN_FLIPS_UP_TO = 16  # seeds; 2^16 = 65,536 patterns
SIGN_FLIP_SAMPLES = 1 << 16
COMBINATIONS = ("fisher", "stouffer")
SEED_BOOTSTRAPS = ("none", "hierarchical")  # the across-seed interval beside the t-interval: none, or three-level


@dataclass(frozen=True)
class AggregateSettings:
    """How a study aggregates across seeds (its `aggregate` section): the t-interval always; with `bootstrap:
    hierarchical` also a three-level bootstrap interval of each mean index, `resamples` resamples seeded by `seed`."""

    bootstrap: str = "none"
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("bootstrap", self.bootstrap, SEED_BOOTSTRAPS)
        check_at_least("resamples", self.resamples, 1)


def t_half_width(sd: np.ndarray, n: np.ndarray, level: float = 0.95) -> np.ndarray:
    """Half-width of the t-interval of a mean of n values with standard deviation `sd`; NaN where n < 2."""
    from scipy import stats  # here: parsing a study config needs none of scipy

    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        half = stats.t.ppf(0.5 + level / 2, n - 1) * np.asarray(sd, dtype=np.float64) / np.sqrt(n)
    return np.where(n > 1, half, np.nan)


def sign_patterns(n: int, seed: int = 0) -> np.ndarray:
    """(patterns, n) of +-1: all 2^n when n <= EXACT_SIGN_FLIPS_UP_TO, else the all-plus pattern and
    SIGN_FLIP_SAMPLES - 1 random ones."""
    if n <= EXACT_SIGN_FLIPS_UP_TO:
        return np.array(list(product((1.0, -1.0), repeat=n)))
    random = np.random.default_rng(seed).choice((1.0, -1.0), size=(SIGN_FLIP_SAMPLES - 1, n))
    return np.vstack([np.ones((1, n)), random])


def sign_flip_p_value(differences: np.ndarray, seed: int = 0) -> float:
    """One-sided ("greater") sign-flip permutation p-value of the mean of paired differences; NaN without any."""
    values = np.asarray(differences, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    means = sign_patterns(values.size, seed) @ values / values.size
    observed = values.mean()
    return float(np.count_nonzero(means >= observed - 1e-12 * max(1.0, abs(observed))) / len(means))


def paired_difference(network: np.ndarray, null: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Network minus null, seed by seed (equal-length arrays, paired by position; pairs with a NaN left out): `n`,
    `mean_difference`, `sd_difference`, the t-interval `low`, `high`, and the sign-flip `p_sign_flip`."""
    differences = np.asarray(network, dtype=np.float64) - np.asarray(null, dtype=np.float64)
    differences = differences[np.isfinite(differences)]
    n = differences.size
    mean = float(differences.mean()) if n else float("nan")
    sd = float(differences.std(ddof=1)) if n > 1 else float("nan")
    half = float(t_half_width(sd, n, level))
    return {
        "n": n,
        "mean_difference": mean,
        "sd_difference": sd,
        "low": mean - half,
        "high": mean + half,
        "p_sign_flip": sign_flip_p_value(differences),
    }


def combine_p_values(p_values: np.ndarray, method: str = "fisher") -> float:
    """Fisher's or Stouffer's combination of independent one-sided p-values (NaNs left out; NaN without any)."""
    if method not in COMBINATIONS:
        raise ValueError(f"unknown combination {method!r}; choose one of {', '.join(COMBINATIONS)}")
    values = np.asarray(p_values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    from scipy import stats

    return float(stats.combine_pvalues(values, method=method).pvalue)
