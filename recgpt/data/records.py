"""The canonical records every source adapter produces and every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    """A catalogue item.

    Attributes:
        item_id: The source's identifier, as a string.
        title: The display title (never empty: untitled items are dropped at load time).
        attributes: Identifying fields shown after the title, in order, e.g.
            ``(("Genres", "Comedy, Drama"),)`` for MovieLens or ``(("Brand", "Fisher-Price"),)`` for Amazon.
    """

    item_id: str
    title: str
    attributes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Interaction:
    """One user-item event.

    Attributes:
        user_id: The source's user identifier, as a string.
        item_id: The item's identifier; must exist in the catalogue.
        timestamp: Seconds since the epoch, or None where the source has no time (ordering then falls back to
            ``order``).
        rating: The explicit rating on the source's scale, or None for implicit feedback.
        review: The review text, or None.
        order: Position of the event in its source file, which breaks timestamp ties deterministically.
    """

    user_id: str
    item_id: str
    timestamp: float | None
    rating: float | None
    review: str | None = None
    order: int = 0


@dataclass(frozen=True)
class Domain:
    """How a source's histories are worded (RECGPT.md section 2).

    Attributes:
        name: Source name, e.g. ``"movielens"``.
        noun: Plural noun of the history header, e.g. ``"movies/shows"``.
        rating_scale: Top of the rating scale, printed after the slash (5.0 or 10.0).
        identifying: The item attributes that identify an item, shown with the title in next-item lines and
            responses (e.g. ``("Brand",)`` for Amazon); RecGPT's MovieLens next-item lines are ``Title: ...``
            only, so its genres appear in full lines (pre-training, rating prompts) but not here.
    """

    name: str
    noun: str
    rating_scale: float = 5.0
    identifying: tuple[str, ...] = ()


MOVIELENS = Domain(name="movielens", noun="movies/shows", rating_scale=5.0, identifying=())
