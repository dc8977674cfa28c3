"""Chunking long histories: near-equal item counts, every chunk within the budget."""

from __future__ import annotations

import random

from recgpt.data.chunking import chunk_bounds


def test_short_histories_are_one_chunk():
    assert chunk_bounds([3, 3, 3], header_tokens=4, budget=100) == [(0, 3)]
    assert chunk_bounds([], header_tokens=4, budget=100) == []


def test_chunks_have_similar_item_counts_and_fit():
    # 10 lines of 9 tokens (+1 newline) and a 5-token header: 105 tokens -> 3 chunks (4, 3, 3 lines).
    assert chunk_bounds([9] * 10, header_tokens=5, budget=50) == [(0, 4), (4, 7), (7, 10)]


def test_uneven_lines_add_chunks_until_each_fits():
    bounds = chunk_bounds([1, 1, 1, 40, 1, 1], header_tokens=2, budget=45)
    costs = [2 + sum(t + 1 for t in [1, 1, 1, 40, 1, 1][a:b]) for a, b in bounds]
    assert all(cost <= 45 for cost in costs)
    assert bounds[0][0] == 0 and bounds[-1][1] == 6


def test_a_line_over_the_budget_stands_alone():
    assert chunk_bounds([200, 1, 1], header_tokens=2, budget=50) == [(0, 1), (1, 2), (2, 3)]


def test_random_histories_are_covered_in_order_within_budget():
    rng = random.Random(3)
    for _ in range(200):
        tokens = [rng.randint(1, 30) for _ in range(rng.randint(1, 80))]
        budget = rng.randint(35, 300)
        bounds = chunk_bounds(tokens, 3, budget)
        assert [a for a, _ in bounds] == [0] + [b for _, b in bounds[:-1]] and bounds[-1][1] == len(tokens)
        sizes = [b - a for a, b in bounds]
        assert max(sizes) - min(sizes) <= 1
        assert all(3 + sum(t + 1 for t in tokens[a:b]) <= budget or b - a == 1 for a, b in bounds)
