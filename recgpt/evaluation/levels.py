"""What a rating method learned of items' and users' levels: a diagnostic beside RMSE.

A rating is roughly the global mean plus the item's level plus the user's. For every rating row this module takes
the target item's mean training rating and the user's, each minus the global mean, and fits (least squares) each
method's predictions on the two: the coefficients say how far the method follows each level. The same fit of the
targets themselves is what an ideal predictor follows; a method whose item coefficient is well below the targets'
under-learns items (it predicts the famous and the panned alike). RMSE by the target item's count of training
ratings says where a method loses: on rare items (where a model has little to learn from) or on popular ones.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from recgpt.evaluation.baselines import global_mean
from recgpt.evaluation.stats import rmse_of_squares

# RMSE by how many training ratings the target item has: [low, high) buckets, the last open-ended
ITEM_RATING_BUCKETS = ((0, 10), (10, 50), (50, 200), (200, None))


def bucket_name(low: int, high: int | None) -> str:
    """``"10-49"`` for [10, 50), ``"200+"`` for [200, inf)."""
    return f"{low}+" if high is None else f"{low}-{high - 1}"


def training_levels(
    train: Sequence[Mapping[str, Any]],
) -> tuple[float, dict[str, list[float]], dict[str, float]]:
    """The global mean rating (the global-mean baseline's), each item's training ratings and each user's mean."""
    items: dict[str, list[float]] = defaultdict(list)
    users: dict[str, float] = {}
    for row in train:
        rated = [(item, float(r)) for item, r in zip(row["item_ids"], row["ratings"], strict=True) if r is not None]
        for item, rating in rated:
            items[item].append(rating)
        if rated:
            users[row["user_id"]] = float(np.mean([r for _, r in rated]))
    return global_mean(r for row in train for r in row["ratings"]), dict(items), users


def level_response(
    values: Sequence[float] | np.ndarray, item_level: np.ndarray, user_level: np.ndarray
) -> dict[str, float]:
    """The least-squares fit ``values ~ intercept + item * item_level + user * user_level``.

    Example:
        >>> item, user = np.array([1.0, -1.0, 0.5, 0.0]), np.array([0.0, 1.0, -1.0, 0.5])
        >>> fit = level_response(3.5 + 0.8 * item + 0.3 * user, item, user)
        >>> {k: round(v, 6) for k, v in fit.items()}
        {'intercept': 3.5, 'item': 0.8, 'user': 0.3}
    """
    design = np.column_stack([np.ones_like(item_level), item_level, user_level])
    coefficients = np.linalg.lstsq(design, np.asarray(values, dtype=float), rcond=None)[0]
    return {"intercept": float(coefficients[0]), "item": float(coefficients[1]), "user": float(coefficients[2])}


def rating_levels(
    rated: Mapping[str, Sequence[float]],
    targets: Sequence[float],
    rows: Sequence[Mapping[str, Any]],
    train: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Each method's response to the item's and the user's level, the targets' own, and RMSE per item bucket.

    Args:
        rated: Each method's predictions, aligned with ``rows``.
        targets: The true ratings of ``rows``.
        rows: The split's rating rows (``user_id``, ``target_item_id``).
        train: The training rows (``user_id``, ``item_ids``, ``ratings``) the levels are measured on.

    Returns:
        ``{"targets": fit, "buckets": {name: rows}, "methods": {method: {**fit, "RMSE_by_item_ratings": {...}}}}``;
        empty when there are fewer than 3 rows (no fit of 3 coefficients).
    """
    if len(rows) < 3:
        return {}
    mean, items, users = training_levels(train)
    item_ratings = [items.get(row["target_item_id"], []) for row in rows]
    item_level = np.array([np.mean(r) - mean if r else 0.0 for r in item_ratings])
    user_level = np.array([users.get(row["user_id"], mean) - mean for row in rows])
    counts = np.array([len(r) for r in item_ratings])
    truth = np.asarray(targets, dtype=float)
    masks = {
        bucket_name(low, high): (counts >= low) & (counts < (high if high is not None else np.inf))
        for low, high in ITEM_RATING_BUCKETS
    }
    methods: dict[str, Any] = {}
    for name, values in rated.items():
        errors = np.asarray(values, dtype=float) - truth
        methods[name] = {
            **level_response(values, item_level, user_level),
            "RMSE_by_item_ratings": {
                bucket: rmse_of_squares(errors[mask] ** 2) if mask.any() else None for bucket, mask in masks.items()
            },
        }
    return {
        "targets": level_response(truth, item_level, user_level),
        "buckets": {bucket: int(mask.sum()) for bucket, mask in masks.items()},
        "methods": methods,
    }
