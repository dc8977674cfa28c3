"""Packing: several instruction examples per training sequence, so a batch carries little padding.

Examples are packed once, by length, into bins of at most ``max_seq_len`` tokens (best-fit decreasing); each
epoch shuffles the bins, not the examples, so the number of batches per epoch is fixed, as composer needs. Inside
a sequence each example has its own ``sequence_id``, and MPT with ``attn_uses_sequence_id: true`` masks attention
across examples; with ALiBi a token's attention depends only on distances within its example, so an example's
loss is the same packed or alone.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence


def pack_lengths(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group item indices into bins whose lengths sum to at most ``capacity`` (best-fit decreasing).

    Items are placed longest first, each into the fullest bin it still fits in (else a new bin). Ties go to the
    lower index, so the result is deterministic. Bins list their items longest first.

    Example:
        >>> pack_lengths([5, 3, 8, 2, 4], capacity=10)
        [[2, 3], [0, 4], [1]]

    Raises:
        ValueError: If an item is longer than ``capacity``.
    """
    too_long = [index for index, length in enumerate(lengths) if length > capacity]
    if too_long:
        raise ValueError(f"item {too_long[0]} of length {lengths[too_long[0]]} exceeds the capacity {capacity}")
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining capacity, bin index), sorted
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        length = lengths[index]
        slot = bisect.bisect_left(free, (length, -1))
        if slot < len(free):
            remaining, target = free.pop(slot)
            bins[target].append(index)
            bisect.insort(free, (remaining - length, target))
        else:
            bins.append([index])
            bisect.insort(free, (capacity - length, len(bins) - 1))
    return bins


def packing_efficiency(lengths: Sequence[int], bins: Sequence[Sequence[int]], capacity: int) -> float:
    """Share of the bins' token slots that hold real tokens.

    Example:
        >>> packing_efficiency([5, 3, 8, 2, 4], [[2, 3], [0, 4], [1]], 10)
        0.7333333333333333
    """
    return sum(lengths) / (len(bins) * capacity) if bins else 0.0
