"""The rating-levels diagnostic: each method's response to the item's and the user's mean training rating."""

from __future__ import annotations

import numpy as np
import pytest

from recgpt.evaluation.levels import rating_levels, training_levels


def rows_and_train(seed: int = 3) -> tuple[list[dict], list[dict], np.ndarray, np.ndarray]:
    """60 users over 12 items whose ratings are 3.5 + the item's level + the user's, and one held-out row each."""
    rng = np.random.default_rng(seed)
    item_level = {f"i{n}": v for n, v in enumerate(rng.normal(0, 0.8, 12))}
    user_level = {f"u{n}": v for n, v in enumerate(rng.normal(0, 0.5, 60))}
    train, rows = [], []
    for n, (user, level) in enumerate(user_level.items()):
        items = [f"i{(n + k) % 12}" for k in range(5 + n % 5)]
        train.append({"user_id": user, "item_ids": items, "ratings": [3.5 + item_level[i] + level for i in items]})
        rows.append({"user_id": user, "target_item_id": f"i{(n + 7) % 12}"})
    return train, rows, np.array([item_level[r["target_item_id"]] for r in rows]), np.array(list(user_level.values()))


def test_a_method_that_follows_both_levels_matches_the_targets_fit():
    train, rows, items, users = rows_and_train()
    mean, item_ratings, _ = training_levels(train)
    targets = list(3.5 + items + users)
    shrunk = [mean + 0.5 * (np.mean(item_ratings[r["target_item_id"]]) - mean) for r in rows]
    levels = rating_levels({"exact": targets, "shrunk": shrunk, "flat": [mean] * len(rows)}, targets, rows, train)
    fits = levels["methods"]
    assert fits["exact"]["item"] == pytest.approx(levels["targets"]["item"])
    assert fits["exact"]["user"] == pytest.approx(levels["targets"]["user"])
    assert fits["shrunk"]["item"] == pytest.approx(0.5, abs=1e-9) and fits["shrunk"]["user"] == pytest.approx(
        0.0, abs=1e-9
    )
    assert fits["flat"]["item"] == pytest.approx(0.0, abs=1e-9) and fits["flat"]["intercept"] == pytest.approx(mean)
    assert all(
        v == pytest.approx(0.0, abs=1e-9) for v in fits["exact"]["RMSE_by_item_ratings"].values() if v is not None
    )
    assert sum(levels["buckets"].values()) == len(rows)


def test_items_and_users_with_no_training_rating_sit_at_the_global_mean():
    train = [
        {"user_id": "a", "item_ids": ["x", "y"], "ratings": [4.0, 2.0]},
        {"user_id": "b", "item_ids": ["x"], "ratings": [None]},
    ]
    rows = [
        {"user_id": "a", "target_item_id": "x"},
        {"user_id": "b", "target_item_id": "z"},
        {"user_id": "c", "target_item_id": "y"},
    ]
    levels = rating_levels({"m": [4.0, 3.0, 2.0]}, [4.0, 3.0, 2.0], rows, train)
    assert levels["buckets"] == {"0-9": 3, "10-49": 0, "50-199": 0, "200+": 0}
    assert levels["methods"]["m"]["RMSE_by_item_ratings"]["10-49"] is None
    assert rating_levels({"m": [1.0]}, [1.0], rows[:1], train) == {}
