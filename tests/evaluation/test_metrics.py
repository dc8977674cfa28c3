"""Metrics against hand-computed values (RecBole's definitions with one relevant item)."""

from __future__ import annotations

import math

import pytest

from recgpt.evaluation.metrics import hit_at_k, mae, ndcg_at_k, ranking_metrics, rmse


def test_hit_and_ndcg_by_hand():
    ranked = ["a", "b", "c", "d", "e", "f"]
    assert hit_at_k(ranked, "e", 5) == 1.0 and hit_at_k(ranked, "f", 5) == 0.0
    assert ndcg_at_k(ranked, "a", 5) == 1.0
    assert ndcg_at_k(ranked, "c", 5) == pytest.approx(0.5)  # 1 / log2(4)
    assert ndcg_at_k(ranked, "e", 5) == pytest.approx(1 / math.log2(6))
    assert ndcg_at_k(ranked, "f", 5) == 0.0
    assert ndcg_at_k([], "a", 5) == 0.0


def test_ranking_metrics_average_over_users():
    result = ranking_metrics([["a", "b"], ["x", "y"], ["q", "r"]], ["b", "x", "z"], [1, 2])
    assert result == pytest.approx(
        {"HR@1": 1 / 3, "NDCG@1": 1 / 3, "HR@2": 2 / 3, "NDCG@2": (1 / math.log2(3) + 1.0) / 3}
    )


def test_rating_errors_by_hand():
    assert rmse([3.0, 5.0, 1.0], [4.0, 4.0, 4.0]) == pytest.approx(math.sqrt((1 + 1 + 9) / 3))
    assert mae([3.0, 5.0, 1.0], [4.0, 4.0, 4.0]) == pytest.approx(5 / 3)
    with pytest.raises(ValueError):
        rmse([], [])
