"""Bootstrap confidence intervals over users: every reported metric carries a 95% interval."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def bootstrap_interval(
    values: Sequence[float], statistic: Callable[[np.ndarray], float] = np.mean, samples: int = 1000, seed: int = 17
) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of ``statistic`` over ``samples`` resamples (with replacement) of users.

    ``values`` holds one number per user (a hit, a gain, a squared error), so resampling them resamples users.

    Example:
        >>> low, high = bootstrap_interval([0.0, 1.0] * 50, samples=200)
        >>> 0.35 < low < 0.5 < high < 0.65
        True
    """
    data = np.asarray(values, dtype=float)
    if len(data) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(data), size=(samples, len(data)))
    estimates = np.array([statistic(data[row]) for row in picks])
    return float(np.percentile(estimates, 2.5)), float(np.percentile(estimates, 97.5))


def rmse_of_squares(squares: np.ndarray) -> float:
    """RMSE from squared errors (the statistic to bootstrap for RMSE)."""
    return float(np.sqrt(np.mean(squares)))
