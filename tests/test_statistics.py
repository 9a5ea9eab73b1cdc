"""Evaluation statistics (training.statistics) against known values."""
from __future__ import annotations

import numpy as np
import pytest

from training.statistics import bootstrap_distribution, percentile_interval, wilson_interval


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (7, 10, 0.3968, 0.8922),  # 95% intervals computed by hand from the Wilson score formula
    (0, 20, 0.0, 0.1611),
    (20, 20, 0.8389, 1.0),
    (1, 1, 0.2065, 1.0),
])
def test_wilson_interval_known_values(k: int, n: int, low: float, high: float) -> None:
    assert wilson_interval(k, n) == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_without_trials_is_everything_and_bad_counts_are_refused() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes=11"):
        wilson_interval(11, 10)


def test_bootstrap_interval_of_a_mean_matches_the_normal_approximation() -> None:
    rng = np.random.default_rng(7)
    sample = rng.normal(10.0, 2.0, size=400)
    distribution = bootstrap_distribution((sample,), lambda x: np.array([x.mean()]), 2000, seed=1)
    assert distribution.shape == (1, 2000)
    low, high = percentile_interval(distribution[0])
    half = 1.96 * sample.std(ddof=1) / np.sqrt(sample.size)  # ~0.196
    assert low == pytest.approx(sample.mean() - half, abs=0.03)
    assert high == pytest.approx(sample.mean() + half, abs=0.03)


def test_bootstrap_resamples_each_sample_on_its_own_and_is_reproducible() -> None:
    # Constant samples: every resample gives the same statistics, whatever is drawn.
    a, b = np.full(5, 2.0), np.full(3, 7.0)
    stat = lambda x, y: np.array([x.mean(), y.mean(), y.size])  # noqa: E731
    distribution = bootstrap_distribution((a, b), stat, 50, seed=0)
    assert distribution.shape == (3, 50)
    assert np.all(distribution[0] == 2.0) and np.all(distribution[1] == 7.0) and np.all(distribution[2] == 3)
    x, y = np.arange(10.0), np.arange(4.0)
    first = bootstrap_distribution((x, y), lambda u, v: np.array([u.mean(), v.mean()]), 30, seed=5)
    again = bootstrap_distribution((x, y), lambda u, v: np.array([u.mean(), v.mean()]), 30, seed=5)
    assert np.array_equal(first, again) and not np.array_equal(first[0], first[1])


def test_percentile_interval_drops_nan_and_needs_enough_values() -> None:
    values = np.array([np.nan] * 5 + list(range(1, 102)), dtype=float)
    assert percentile_interval(values) == pytest.approx((3.5, 98.5))
    assert percentile_interval(values, min_finite=200) is None
    assert percentile_interval(np.array([np.nan, np.inf])) is None
