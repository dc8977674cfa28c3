"""Long histories cut into chunks of similar item counts, each under a token budget (RECGPT.md section 2)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def chunk_bounds(line_tokens: Sequence[int], header_tokens: int, budget: int) -> list[tuple[int, int]]:
    """Split a history into the fewest chunks of near-equal item counts whose documents fit ``budget`` tokens.

    A chunk's document costs ``header_tokens`` plus, per line, its tokens and one newline. With ``k`` chunks the
    ``n`` lines are cut into sizes ``n // k`` or ``n // k + 1`` (larger ones first); ``k`` starts at
    ``ceil(total / budget)`` and grows until every chunk fits. A single line longer than the budget becomes a
    chunk of its own (the caller counts it).

    Returns:
        ``(start, stop)`` index pairs, in order, covering every line.

    Example:
        >>> chunk_bounds([10] * 10, header_tokens=5, budget=60)   # total 115 -> 2 chunks of 5 lines (60 each)
        [(0, 5), (5, 10)]
        >>> chunk_bounds([10, 10, 10], header_tokens=5, budget=100)
        [(0, 3)]
    """
    count = len(line_tokens)
    if count == 0:
        return []
    total = header_tokens + sum(tokens + 1 for tokens in line_tokens)
    chunks = min(count, max(1, math.ceil(total / budget)))
    while True:
        bounds = _even_bounds(count, chunks)
        costs = [header_tokens + sum(t + 1 for t in line_tokens[a:b]) for a, b in bounds]
        if all(cost <= budget or b - a == 1 for cost, (a, b) in zip(costs, bounds, strict=True)) or chunks == count:
            return bounds
        chunks += 1


def _even_bounds(count: int, chunks: int) -> list[tuple[int, int]]:
    size, extra = divmod(count, chunks)
    bounds, start = [], 0
    for index in range(chunks):
        stop = start + size + (1 if index < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds
