"""Bootstrap intervals over users."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recgpt.evaluation.stats import (
    PairedDifference,
    bootstrap_interval,
    paired_bootstrap,
    paired_comparisons,
    rmse_of_squares,
)


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


# --- paired differences ------------------------------------------------------------------------------------------


def keyed(values) -> dict[tuple[str, str], float]:
    """One row per user: ``{("u0", "t0"): v0, ...}``."""
    return {(f"u{i}", f"t{i}"): float(v) for i, v in enumerate(values)}


def test_identical_methods_differ_by_exactly_zero():
    hits = keyed(np.random.default_rng(1).binomial(1, 0.2, 200))
    assert paired_bootstrap(hits, dict(hits), samples=300) == PairedDifference(0.0, 0.0, 0.0)
    squares = keyed(np.random.default_rng(2).uniform(0, 4, 50))
    assert paired_bootstrap(squares, dict(squares), root=True, samples=300) == PairedDifference(0.0, 0.0, 0.0)


def test_one_more_hit_of_n_users_is_a_difference_of_one_over_n():
    n = 40
    baseline = keyed([1] * 5 + [0] * (n - 5))
    model = {**baseline, ("u20", "t20"): 1.0}  # the model also hits user u20
    result = paired_bootstrap(model, baseline, samples=2000, seed=5)
    assert result.difference == pytest.approx(1 / n, abs=1e-15)
    # every resample differs by (copies of u20) / n: never negative, and 0 only where u20 was not drawn
    assert result.low == 0.0 and 1 / n <= result.high <= 4 / n
    assert paired_bootstrap(baseline, model, samples=2000, seed=5).difference == pytest.approx(-1 / n, abs=1e-15)


def test_rmse_difference_is_the_difference_of_rmses_on_each_resample():
    model, baseline = keyed([1.0, 4.0]), keyed([0.0, 0.0])  # squared errors
    result = paired_bootstrap(model, baseline, root=True, samples=500)
    assert result.difference == pytest.approx(math.sqrt(2.5))
    # two users: resamples {u0,u0}, {u0,u1}, {u1,u1} give RMSE 1, sqrt(2.5), 2
    assert (result.low, result.high) == (1.0, 2.0)
    assert paired_bootstrap(model, baseline, samples=500).difference == pytest.approx(2.5)  # mean, not root


def test_a_user_with_several_rows_is_resampled_as_one_user():
    model = {("u1", "a"): 1.0, ("u1", "b"): 1.0, ("u2", "c"): 0.0}
    baseline = dict.fromkeys(model, 0.0)
    result = paired_bootstrap(model, baseline, samples=1000)
    assert result.difference == pytest.approx(2 / 3)
    # resamples of the users {u1,u1}, {u1,u2}, {u2,u2} give 1, 2/3, 0; of the rows, 1/3 would occur too
    assert (result.low, result.high) == (0.0, 1.0)


def test_rows_are_aligned_by_user_not_by_order_and_different_users_are_refused():
    model = keyed([1, 0, 0, 1])
    shuffled = dict(reversed(list(model.items())))
    assert paired_bootstrap(model, shuffled, samples=100) == PairedDifference(0.0, 0.0, 0.0)
    fewer = dict(list(model.items())[:3])
    with pytest.raises(ValueError, match=r"'model: x' and 'most popular'.*1 only in 'model: x' \(users \['u3'\]\)"):
        paired_bootstrap(model, fewer, names=("model: x", "most popular"))
    other = {**fewer, ("u9", "t9"): 0.0}
    with pytest.raises(ValueError, match=r"1 only in 'model: x' .*; 1 only in 'most popular' \(users \['u9'\]\)"):
        paired_comparisons({"model: x": {"HR@10": model}, "most popular": {"HR@10": other}})


def test_paired_interval_is_narrower_than_unpaired_on_correlated_methods():
    """Two methods that mostly hit the same users: the paired interval of the difference is a fraction of the
    unpaired one (users resampled independently for each method) and of each method's own interval."""
    rng = np.random.default_rng(0)
    n = 1000
    base = rng.binomial(1, 0.2, n).astype(float)
    flips = rng.random(n) < 0.05
    model = np.where(flips, 1.0 - base, base)
    paired = paired_bootstrap(keyed(model), keyed(base), samples=1000)
    assert paired.difference == pytest.approx(model.mean() - base.mean())
    assert paired.low <= paired.difference <= paired.high
    first = rng.integers(0, n, size=(1000, n))
    second = rng.integers(0, n, size=(1000, n))
    unpaired = np.percentile(model[first].mean(axis=1) - base[second].mean(axis=1), [2.5, 97.5])
    width = paired.high - paired.low
    assert width < 0.5 * (unpaired[1] - unpaired[0])
    low, high = bootstrap_interval(base, samples=1000)
    assert width < 0.7 * (high - low)  # narrower even than one method's own interval


def test_paired_comparisons_pair_every_model_method_with_every_baseline():
    hits = keyed([1, 0, 1, 0])
    values = {
        "model: likelihood": {"HR@10": hits, "NDCG@10": hits},
        "model: constrained_beam": {"HR@10": keyed([0, 0, 1, 0]), "NDCG@10": hits},
        "most popular": {"HR@10": keyed([1, 0, 0, 0]), "NDCG@10": hits},
        "SASRec (cornac)": {"HR@10": hits, "NDCG@10": hits},
    }
    result = paired_comparisons(values, samples=100)
    assert list(result) == ["model: likelihood", "model: constrained_beam"]
    assert all(list(against) == ["most popular", "SASRec (cornac)"] for against in result.values())
    assert result["model: likelihood"]["most popular"]["HR@10"]["difference"] == pytest.approx(0.25)
    assert result["model: constrained_beam"]["SASRec (cornac)"]["HR@10"]["difference"] == pytest.approx(-0.25)
    assert result["model: likelihood"]["SASRec (cornac)"]["NDCG@10"] == {"difference": 0.0, "ci": [0.0, 0.0]}
    squares = {"model: expected": {"RMSE": keyed([1.0, 4.0])}, "global mean": {"RMSE": keyed([0.0, 0.0])}}
    rmse = paired_comparisons(squares, samples=100)["model: expected"]["global mean"]["RMSE"]
    assert rmse["difference"] == pytest.approx(math.sqrt(2.5))
