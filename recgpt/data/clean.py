"""Cleaning per RECGPT.md: duplicate items and events merged, users with too few interactions dropped."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from recgpt.data.records import SourceData
from recgpt.data.render import render_item


def merge_duplicate_items(data: SourceData) -> SourceData:
    """Merge items whose identifying line is identical into the first of them (catalogue order).

    Two ids that render to the same next-item text cannot be told apart by a text model, so they are one item.
    MovieLens-100K lists 18 movies twice (e.g. "Chasing Amy (1997)"). Merges are counted under ``duplicate_item``.

    Example:
        Items ``{"1": "Title: Heat (1995)", "9": "Title: Heat (1995)"}`` become ``{"1": ...}``, and every
        interaction with item "9" now names item "1".
    """
    canonical: dict[str, str] = {}
    first_by_text: dict[str, str] = {}
    for item_id, item in data.items.items():
        canonical[item_id] = first_by_text.setdefault(render_item(item, data.domain), item_id)
    merged = sum(1 for item_id, target in canonical.items() if item_id != target)
    items = {item_id: item for item_id, item in data.items.items() if canonical[item_id] == item_id}
    interactions = [
        event if canonical[event.item_id] == event.item_id else replace(event, item_id=canonical[event.item_id])
        for event in data.interactions
    ]
    rejects = Counter(data.rejects)
    if merged:
        rejects["duplicate_item"] += merged
    return replace(data, items=items, interactions=interactions, rejects=rejects)


def drop_duplicate_interactions(data: SourceData) -> SourceData:
    """Remove exact duplicate events (same user, item, time, rating and review), keeping the first.

    Example:
        Two rows ``("u", "1", 100.0, 4.0)`` become one; ``("u", "1", 200.0, 4.0)`` (a later re-rating) stays.
    """
    seen: set[tuple[object, ...]] = set()
    kept = []
    for event in data.interactions:
        key = (event.user_id, event.item_id, event.timestamp, event.rating, event.review)
        if key not in seen:
            seen.add(key)
            kept.append(event)
    rejects = Counter(data.rejects)
    if len(kept) < len(data.interactions):
        rejects["duplicate_interaction"] += len(data.interactions) - len(kept)
    return replace(data, interactions=kept, rejects=rejects)


def drop_sparse_users(data: SourceData, min_interactions: int) -> SourceData:
    """Remove users with fewer than ``min_interactions`` events (RecGPT keeps users with 5 or more).

    The dropped events are counted under ``sparse_user_interaction``.
    """
    counts = Counter(event.user_id for event in data.interactions)
    kept = [event for event in data.interactions if counts[event.user_id] >= min_interactions]
    rejects = Counter(data.rejects)
    if len(kept) < len(data.interactions):
        rejects["sparse_user_interaction"] += len(data.interactions) - len(kept)
    return replace(data, interactions=kept, rejects=rejects)


def clean(data: SourceData, min_interactions: int) -> SourceData:
    """All cleaning steps in order: merge duplicate items, drop duplicate events, then drop sparse users."""
    return drop_sparse_users(drop_duplicate_interactions(merge_duplicate_items(data)), min_interactions)
