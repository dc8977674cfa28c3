"""Cleaning steps on hand-built sources."""

from __future__ import annotations

from recgpt.data.clean import clean, drop_duplicate_interactions, drop_sparse_users, merge_duplicate_items
from recgpt.data.records import MOVIELENS, Interaction, Item, SourceData


def source(items: list[Item], events: list[Interaction]) -> SourceData:
    return SourceData(MOVIELENS, {i.item_id: i for i in items}, events)


def test_duplicate_titles_merge_into_the_first_id():
    items = [Item("1", "Heat (1995)"), Item("2", "Fargo (1996)"), Item("9", "Heat (1995)", (("Genres", "Drama"),))]
    data = merge_duplicate_items(source(items, [Interaction("u", "9", 1.0, 4.0)]))
    assert list(data.items) == ["1", "2"]
    assert data.interactions[0].item_id == "1"
    assert data.rejects["duplicate_item"] == 1


def test_exact_duplicate_events_are_dropped_and_counted():
    events = [
        Interaction("u", "1", 1.0, 4.0),
        Interaction("u", "1", 1.0, 4.0, order=1),
        Interaction("u", "1", 2.0, 4.0, order=2),
    ]
    data = drop_duplicate_interactions(source([Item("1", "Heat (1995)")], events))
    assert [e.timestamp for e in data.interactions] == [1.0, 2.0]
    assert data.rejects["duplicate_interaction"] == 1


def test_sparse_users_are_dropped_and_counted():
    events = [Interaction("u", "1", float(t), 4.0, order=t) for t in range(5)] + [Interaction("v", "1", 1.0, 4.0)]
    data = drop_sparse_users(source([Item("1", "Heat (1995)")], events), 5)
    assert {e.user_id for e in data.interactions} == {"u"}
    assert data.rejects["sparse_user_interaction"] == 1


def test_clean_runs_every_step():
    items = [Item("1", "Heat (1995)"), Item("2", "Heat (1995)")]
    events = [Interaction("u", "2", float(t), 4.0, order=t) for t in range(5)]
    data = clean(source(items, events), 5)
    assert {e.item_id for e in data.interactions} == {"1"}
    assert len(data.interactions) == 5
