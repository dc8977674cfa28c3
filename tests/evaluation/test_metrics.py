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


def test_agrees_with_recbole_matrix_form_on_random_rankings():
    """RecBole computes Hit and NDCG from a users x K boolean matrix of hits and each user's number of relevant
    items (here 1): Hit@k = any hit in the first k; NDCG@k = cumulative DCG / ideal DCG over min(relevant, k)."""
    import numpy as np

    rng = np.random.default_rng(5)
    items = [f"i{n}" for n in range(30)]
    rankings = [list(rng.permutation(items)[:10]) for _ in range(200)]
    targets = [str(rng.choice(items)) for _ in range(200)]
    hits = np.array([[item == target for item in ranked] for ranked, target in zip(rankings, targets, strict=True)])
    discounts = 1.0 / np.log2(np.arange(2, 12))
    dcg = np.cumsum(hits * discounts, axis=1)
    ideal = np.cumsum(discounts)[np.minimum(1, np.arange(1, 11)) - 1]  # one relevant item: the first discount
    for k in (1, 5, 10):
        recbole_hit = hits[:, :k].any(axis=1).mean()
        recbole_ndcg = (dcg[:, k - 1] / ideal[k - 1]).mean()
        ours = ranking_metrics(rankings, targets, [k])
        assert ours[f"HR@{k}"] == pytest.approx(recbole_hit)
        assert ours[f"NDCG@{k}"] == pytest.approx(recbole_ndcg)
