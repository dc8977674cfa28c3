"""Bootstrap intervals over users."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recgpt.evaluation.stats import bootstrap_interval, rmse_of_squares


def test_interval_brackets_the_mean_and_narrows_with_more_users():
    rng = np.random.default_rng(0)
    small = rng.binomial(1, 0.3, 100).astype(float)
    large = rng.binomial(1, 0.3, 10_000).astype(float)
    low, high = bootstrap_interval(small, samples=500)
    assert low < small.mean() < high
    wide = high - low
    low, high = bootstrap_interval(large, samples=500)
    assert low < large.mean() < high and high - low < wide / 5
    # a binomial mean's 95% interval is about +-1.96 standard errors
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(0.3 * 0.7 / 10_000), rel=0.15)


def test_constant_values_and_determinism():
    assert bootstrap_interval([2.0] * 10) == (2.0, 2.0)
    assert bootstrap_interval([0.0, 1.0, 1.0], seed=3) == bootstrap_interval([0.0, 1.0, 1.0], seed=3)
    assert all(math.isnan(v) for v in bootstrap_interval([]))


def test_rmse_interval_is_bootstrapped_on_squared_errors():
    errors = np.array([1.0, -1.0, 3.0])
    assert rmse_of_squares(errors**2) == pytest.approx(math.sqrt(11 / 3))
    low, high = bootstrap_interval(errors**2, rmse_of_squares, samples=300)
    assert 1.0 <= low <= math.sqrt(11 / 3) <= high <= 3.0
