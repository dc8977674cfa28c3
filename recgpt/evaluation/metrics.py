"""Ranking and rating metrics, with RecBole's definitions for a single relevant item per user."""

from __future__ import annotations

import math
from collections.abc import Sequence


def hit_at_k(ranked: Sequence[str], target: str, k: int) -> float:
    """1.0 if ``target`` is among the first ``k`` items of ``ranked``, else 0.0.

    Example:
        >>> hit_at_k(["a", "b", "c"], "c", 2), hit_at_k(["a", "b", "c"], "c", 3)
        (0.0, 1.0)
    """
    return 1.0 if target in ranked[:k] else 0.0


def ndcg_at_k(ranked: Sequence[str], target: str, k: int) -> float:
    """Normalised discounted cumulative gain with one relevant item: ``1 / log2(rank + 1)``, rank from 1.

    With a single relevant item the ideal DCG is 1, so NDCG equals the DCG of the hit (RecBole's definition).

    Example:
        >>> ndcg_at_k(["a", "b"], "a", 5), round(ndcg_at_k(["a", "b"], "b", 5), 4), ndcg_at_k(["a"], "z", 5)
        (1.0, 0.6309, 0.0)
    """
    for rank, item in enumerate(ranked[:k], start=1):
        if item == target:
            return 1.0 / math.log2(rank + 1)
    return 0.0


def rmse(predictions: Sequence[float], targets: Sequence[float]) -> float:
    """Root mean squared error.

    Example:
        >>> rmse([1.0, 3.0], [2.0, 5.0]) == math.sqrt(2.5)
        True
    """
    _check_lengths(predictions, targets)
    return math.sqrt(sum((p - t) ** 2 for p, t in zip(predictions, targets, strict=True)) / len(targets))


def mae(predictions: Sequence[float], targets: Sequence[float]) -> float:
    """Mean absolute error.

    Example:
        >>> mae([1.0, 3.0], [2.0, 5.0])
        1.5
    """
    _check_lengths(predictions, targets)
    return sum(abs(p - t) for p, t in zip(predictions, targets, strict=True)) / len(targets)


def ranking_metrics(
    ranked_lists: Sequence[Sequence[str]], targets: Sequence[str], ks: Sequence[int]
) -> dict[str, float]:
    """Mean HR@K and NDCG@K over users, keyed ``"HR@5"``, ``"NDCG@5"``, ...

    Example:
        >>> ranking_metrics([["a", "b"], ["c", "d"]], ["b", "x"], [1, 2])["HR@2"]
        0.5
    """
    if len(ranked_lists) != len(targets) or not targets:
        raise ValueError(
            f"need one ranked list per target and at least one user, got {len(ranked_lists)}/{len(targets)}"
        )
    result: dict[str, float] = {}
    for k in ks:
        result[f"HR@{k}"] = sum(hit_at_k(r, t, k) for r, t in zip(ranked_lists, targets, strict=True)) / len(targets)
        result[f"NDCG@{k}"] = sum(ndcg_at_k(r, t, k) for r, t in zip(ranked_lists, targets, strict=True)) / len(targets)
    return result


def _check_lengths(predictions: Sequence[float], targets: Sequence[float]) -> None:
    if len(predictions) != len(targets) or not targets:
        raise ValueError(
            f"need equal, non-zero numbers of predictions and targets, got {len(predictions)}/{len(targets)}"
        )
