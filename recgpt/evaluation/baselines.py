"""Non-neural baselines computed on the same training split: most-popular items and the global mean rating."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence


class MostPopular:
    """Rank items by their number of training interactions (ties: first seen in training first).

    Example:
        >>> baseline = MostPopular([["a", "b"], ["b", "c"], ["b", "a"]])
        >>> baseline.recommend(2), baseline.recommend(2, exclude={"b"})
        (['b', 'a'], ['a', 'c'])
    """

    def __init__(self, histories: Iterable[Sequence[str]]) -> None:
        counts: Counter[str] = Counter()
        for history in histories:
            counts.update(history)
        # Counter.most_common keeps insertion order among equal counts.
        self.ranking = [item for item, _ in counts.most_common()]

    def recommend(self, k: int, exclude: Collection[str] = ()) -> list[str]:
        """The ``k`` most popular items not in ``exclude``."""
        excluded = set(exclude)
        ranked = []
        for item in self.ranking:
            if item not in excluded:
                ranked.append(item)
                if len(ranked) == k:
                    break
        return ranked


def global_mean(ratings: Iterable[float | None]) -> float:
    """The mean of the known training ratings.

    Example:
        >>> global_mean([4.0, None, 2.0])
        3.0
    """
    known = [rating for rating in ratings if rating is not None]
    if not known:
        raise ValueError("no training ratings: the global-mean baseline needs at least one")
    return sum(known) / len(known)
