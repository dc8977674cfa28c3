"""Bootstrap confidence intervals over users: every reported metric carries a 95% interval, and every model
method a paired interval of its difference from each baseline on the same users."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MODEL_PREFIX = "model: "  # the report's names of the trained model's methods; every other method is a baseline


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    samples: int = 1000,
    seed: int = 17,
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


PairKey = tuple[str, str]  # (user_id, row id): one evaluated row of a user (its target item)


@dataclass(frozen=True)
class PairedDifference:
    """A metric's difference between two methods on the same rows, and its 95% paired bootstrap interval."""

    difference: float
    low: float
    high: float

    def as_dict(self) -> dict[str, Any]:
        """``{"difference": d, "ci": [low, high]}``, the report's form."""
        return {"difference": self.difference, "ci": [self.low, self.high]}


def align_rows(
    first: Mapping[PairKey, float], second: Mapping[PairKey, float], names: tuple[str, str]
) -> list[PairKey]:
    """The rows both methods were scored on, in a fixed order; an error if the two methods' rows differ.

    Raises:
        ValueError: Naming both methods, how many rows only each has and a few of their users.
    """
    only = [sorted(set(first) - set(second)), sorted(set(second) - set(first))]
    if any(only):
        sides = "; ".join(
            f"{len(keys)} only in '{name}' (users {sorted({user for user, _ in keys})[:3]})"
            for name, keys in zip(names, only, strict=True)
            if keys
        )
        raise ValueError(
            f"paired comparison of '{names[0]}' and '{names[1]}': the methods were scored on different users "
            f"({sides}); a paired interval needs every method evaluated on the same users and rows"
        )
    return sorted(first)


def paired_bootstrap(
    first: Mapping[PairKey, float],
    second: Mapping[PairKey, float],
    *,
    root: bool = False,
    samples: int = 1000,
    seed: int = 17,
    names: tuple[str, str] = ("first", "second"),
) -> PairedDifference:
    """``stat(first) - stat(second)`` and its 95% interval, both methods measured on the SAME resamples of users.

    ``stat`` is the mean of the per-row values (a hit, a gain, an absolute error), or with ``root`` the square root
    of their mean (RMSE from squared errors). Rows are keyed ``(user_id, row)`` and aligned by key; each resample
    draws users with replacement and takes all their rows for both methods, so what both methods get right or
    wrong together cancels out of the difference (the honest test of "beats", which separate intervals cannot
    show). With one row per user this is the classic paired bootstrap over users.

    Example:
        >>> same = {("u1", "a"): 1.0, ("u2", "b"): 0.0, ("u3", "c"): 0.0}
        >>> paired_bootstrap(same, same, samples=50)
        PairedDifference(difference=0.0, low=0.0, high=0.0)
        >>> round(paired_bootstrap({**same, ("u2", "b"): 1.0}, same, samples=50).difference, 4)
        0.3333

    Raises:
        ValueError: If the two methods' rows differ (``align_rows``).
    """
    keys = align_rows(first, second, names)
    if not keys:
        return PairedDifference(math.nan, math.nan, math.nan)
    users = {user: index for index, user in enumerate(dict.fromkeys(user for user, _ in keys))}
    owner = np.array([users[user] for user, _ in keys])
    counts = np.bincount(owner, minlength=len(users)).astype(float)
    totals = [np.bincount(owner, [values[k] for k in keys], minlength=len(users)) for values in (first, second)]

    def statistic(sums: np.ndarray, rows: np.ndarray) -> np.ndarray:
        means = sums / rows
        return np.sqrt(means) if root else means

    difference = statistic(totals[0].sum(), counts.sum()) - statistic(totals[1].sum(), counts.sum())
    picks = np.random.default_rng(seed).integers(0, len(users), size=(samples, len(users)))
    rows = counts[picks].sum(axis=1)
    estimates = statistic(totals[0][picks].sum(axis=1), rows) - statistic(totals[1][picks].sum(axis=1), rows)
    low, high = np.percentile(estimates, [2.5, 97.5])
    return PairedDifference(float(difference) + 0.0, float(low) + 0.0, float(high) + 0.0)  # + 0.0: never -0.0


def paired_comparisons(
    values: Mapping[str, Mapping[str, Mapping[PairKey, float]]],
    root_metrics: Collection[str] = ("RMSE",),
    samples: int = 1000,
    seed: int = 17,
) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """Every model method (named ``model: ...``) against every other method, metric by metric, paired.

    Args:
        values: ``values[method][metric][(user_id, row)]``: each method's per-row values of each metric
            (squared errors for the ``root_metrics``).
        root_metrics: Metrics whose statistic is the root of the mean (RMSE).

    Returns:
        ``result[model][baseline][metric] = {"difference": model - baseline, "ci": [low, high]}``.
    """
    models = [name for name in values if name.startswith(MODEL_PREFIX)]
    baselines = [name for name in values if not name.startswith(MODEL_PREFIX)]
    return {
        model: {
            baseline: {
                metric: paired_bootstrap(
                    per_row,
                    values[baseline][metric],
                    root=metric in root_metrics,
                    samples=samples,
                    seed=seed,
                    names=(model, baseline),
                ).as_dict()
                for metric, per_row in values[model].items()
                if metric in values[baseline]
            }
            for baseline in baselines
        }
        for model in models
    }
