"""Baselines on hand-built training data."""

from __future__ import annotations

import pytest

from recgpt.evaluation.baselines import MostPopular, global_mean


def test_most_popular_counts_ties_by_first_appearance_and_excludes():
    baseline = MostPopular([["c", "a"], ["a", "b"], ["b", "d"], ["a"]])
    assert baseline.recommend(3) == ["a", "b", "c"]
    assert baseline.recommend(2, exclude={"a"}) == ["b", "c"]
    assert baseline.recommend(10) == ["a", "b", "c", "d"]


def test_global_mean_ignores_missing_ratings():
    assert global_mean([5.0, None, 3.0, 4.0]) == 4.0
    with pytest.raises(ValueError):
        global_mean([None])
