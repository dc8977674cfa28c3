"""The DuckDB stage on hand-built sources: cleaning, ordering, user split, protocols and the leak check."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recgpt.data.engine import Engine, SourcePlan
from recgpt.data.ingest import ParquetSink, reject_duplicate_items
from recgpt.data.outputs import KEY_SCHEMA
from recgpt.data.records import MOVIELENS, Domain, Interaction, Item

SHOP = Domain("shop", "products", 5.0, identifying=("Brand",))


def source(folder: Path, items: list[Item], events: list[Interaction]) -> Path:
    sink = ParquetSink(folder, folder.name)
    for item in items:
        sink.item(item)
    for event in events:
        sink.interaction(event)
    sink.close()
    return folder


def engine(tmp_path: Path, plans: list[SourcePlan], **kwargs) -> Engine:
    db = Engine(tmp_path / "db", memory_limit="256MB", threads=1)
    db.load(
        plans, kwargs.get("min_user_interactions", 1), kwargs.get("finetune_fraction", 0.0), 17, kwargs.get("max_users")
    )
    return db


def events(user: str, items: str, times: list[float | None], rating: float | None = 4.0) -> list[Interaction]:
    return [Interaction(user, item, t, rating, order=i) for i, (item, t) in enumerate(zip(items, times, strict=True))]


def test_ties_keep_file_order_and_duplicates_merge(tmp_path: Path):
    items = [Item("a", "Heat (1995)"), Item("b", "Fargo (1996)"), Item("z", "Heat (1995)"), Item("a", "Heat again")]
    rows = [
        Interaction("u", "b", 5.0, 3.0, order=10),
        Interaction("u", "z", 5.0, 4.0, order=11),
        Interaction("u", "a", 1.0, 5.0, order=12),
        Interaction("u", "a", 1.0, 5.0, order=13),
        Interaction("u", "missing", 1.0, 5.0, order=14),
    ]
    plan = SourcePlan("ml", source(tmp_path / "ml", items, rows), MOVIELENS)
    db = engine(tmp_path, [plan])
    [(name, user, lines, orders)] = list(db.pretraining())
    # "z" renders like "a" (the first "Heat (1995)"), so it is "a"; equal timestamps keep file order.
    assert (name, user, orders) == ("ml", "u", [12, 10, 11])
    assert lines == [
        "Title: Heat (1995); Rating: 5.0/5.0",
        "Title: Fargo (1996); Rating: 3.0/5.0",
        "Title: Heat (1995); Rating: 4.0/5.0",
    ]
    counts = db.counts["ml"]
    assert (counts["duplicate_item"], counts["duplicate_interaction"], counts["unknown_or_untitled_item"]) == (1, 1, 1)


def test_sparse_users_excluded_users_and_sampling(tmp_path: Path):
    items = [Item(i, f"Item {i}", (("Brand", "B"),)) for i in "abcdef"]
    older = source(tmp_path / "old", items, events("shared", "ab", [1, 2]))
    newer = source(
        tmp_path / "new",
        items,
        events("shared", "abcde", [1, 2, 3, 4, 5])
        + events("solo", "abcdef", [1, 2, 3, 4, 5, 6])
        + events("sparse", "ab", [1, 2]),
    )
    plans = [SourcePlan("old", older, SHOP), SourcePlan("new", newer, SHOP, exclude_users_of=("old",))]
    db = engine(tmp_path, plans, min_user_interactions=5)
    users = {(name, user) for name, user, _, _ in db.pretraining()}
    assert users == {("new", "solo")} and not list(db.histories())
    assert db.counts["new"]["excluded_user_interaction"] == 5
    assert db.counts["new"]["sparse_user_interaction"] == 2
    sampled = engine(tmp_path / "s", [SourcePlan("new", newer, SHOP)], max_users=1)
    assert len(list(sampled.pretraining())) == 1 and sampled.counts["new"]["unsampled_user_interaction"] > 0


def test_user_split_is_a_seeded_fraction(tmp_path: Path):
    items = [Item("a", "A"), Item("b", "B")]
    rows = [e for n in range(400) for e in events(f"user{n}", "ab", [1, 2])]
    db = engine(tmp_path, [SourcePlan("big", source(tmp_path / "big", items, rows), SHOP)], finetune_fraction=0.25)
    finetune = [h.user_id for h in db.histories()]
    assert all(h.group == "finetune" for h in db.histories())
    assert 0.18 < len(finetune) / 400 < 0.32
    assert len(list(db.pretraining())) == 400 - len(finetune)
    again = engine(tmp_path / "again", [SourcePlan("big", tmp_path / "big", SHOP)], finetune_fraction=0.25)
    assert [h.user_id for h in again.histories()] == finetune


def test_leave_one_out_and_random_split_hold_events_out(tmp_path: Path):
    items = [Item(str(i), f"Item {i}") for i in range(30)]
    rows = events("u", [str(i) for i in range(30)], [float(i) for i in range(30)])
    folder = source(tmp_path / "bench", items, rows)
    db = engine(tmp_path, [SourcePlan("bench", folder, SHOP, benchmark=("leave_one_out", "random_80_10_10"))])
    [history] = list(db.histories())
    assert history.group == "benchmark"
    assert [e.next_item for e in history.events[-2:]] == ["validation", "test"]
    assert all(e.next_item is None for e in history.events[:-2])
    held = [e for e in history.events if e.rating_split is not None]
    assert 0 < len(held) < 12
    loo_only = engine(tmp_path / "loo", [SourcePlan("bench", folder, SHOP, benchmark=("leave_one_out",))])
    [history] = list(loo_only.histories())
    assert [e.rating_split for e in history.events[-2:]] == ["validation", "test"]  # the rating task uses them


def test_leak_check_finds_a_held_out_event_in_training_keys(tmp_path: Path):
    items = [Item(str(i), f"Item {i}") for i in range(5)]
    folder = source(tmp_path / "bench", items, events("u", "01234", [1, 2, 3, 4, 5]))
    db = engine(tmp_path, [SourcePlan("bench", folder, SHOP, benchmark=("leave_one_out",))])
    keys = tmp_path / "keys.parquet"
    pq.write_table(pa.table([["bench"] * 2, ["u"] * 2, [0, 4]], schema=KEY_SCHEMA), keys)
    assert db.leaked(keys) == [("bench", "u", 4, "test")]


def test_memory_limit_is_applied(tmp_path: Path):
    db = Engine(tmp_path / "db", memory_limit="64MB")
    assert db.scalar("SELECT current_setting('memory_limit')") == "61.0 MiB"  # 64 MB, as DuckDB prints it


def test_streams_cut_users_across_batches(tmp_path: Path):
    items = [Item(i, f"Item {i}") for i in "abcdefg"]
    rows = [
        e for user, count in (("u1", 3), ("u2", 1), ("u3", 5)) for e in events(user, "abcdefg"[:count], [1] * count)
    ]
    db = engine(tmp_path, [SourcePlan("s", source(tmp_path / "s", items, rows), SHOP)])
    whole = list(db.pretraining(batch_size=1000))
    assert [(user, len(lines)) for _, user, lines, _ in whole] == [("u1", 3), ("u2", 1), ("u3", 5)]
    for size in (1, 2, 3, 4):
        assert list(db.pretraining(batch_size=size)) == whole


HOSTILE_LIMIT = "1GB'; COPY (SELECT 42) TO 'x.csv'; --"


@pytest.mark.parametrize("value", [HOSTILE_LIMIT, "lots", "2GB; SELECT 1", "-1GB", "0GB", "", "1e3MB", "10KB"])
def test_memory_limit_is_checked_before_sql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"^memory_limit: "):
        Engine(tmp_path / "db", memory_limit=value)
    with pytest.raises(ValueError, match=r"^memory_limit: "):
        reject_duplicate_items(tmp_path, "s", value)  # the ingest connections take the same path
    assert not list(tmp_path.rglob("x.csv"))


@pytest.mark.parametrize("value", [0, -2, True, "2; SELECT 1", 1.5])
def test_threads_are_checked_before_sql(tmp_path: Path, value: object):
    with pytest.raises(ValueError, match=r"^threads: must be a whole number >= 1"):
        Engine(tmp_path / "db", threads=value)  # type: ignore[arg-type]


def test_names_seeds_and_paths_with_quotes_never_reach_sql_as_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    items = [Item(i, f"Item {i}") for i in "abc"]
    folder = source(tmp_path / 'it\'s "here"', items, events("u'1", "abc", [1, 2, 3]))
    name = "x'); COPY (SELECT 42) TO 'y.csv'; --\""
    db = Engine(tmp_path / "d'b", memory_limit="256MB", threads=1)
    db.load([SourcePlan(name, folder, SHOP, benchmark=("leave_one_out",))], 1, 0.0, 17)
    [history] = list(db.histories())
    assert (history.source, history.user_id, len(history.events)) == (name, "u'1", 3)
    keys = tmp_path / "k'eys.parquet"
    pq.write_table(pa.table([[name], ["u'1"], [2]], schema=KEY_SCHEMA), keys)
    assert db.leaked(keys) == [(name, "u'1", 2, "test")]
    assert not list(tmp_path.rglob("y.csv"))


def test_events_are_deduplicated_on_user_item_and_time_first_copy_wins(tmp_path: Path):
    items = [Item("a", "Heat (1995)"), Item("b", "Fargo (1996)")]
    rows = [
        Interaction("u", "a", 1.0, 4.0, "Tense", order=1),
        Interaction("u", "a", 1.0, 2.0, "Tense", order=2),  # the same event, another rating
        Interaction("u", "a", 1.0, 4.0, "Tense  ", order=3),  # a review differing in whitespace
        Interaction("u", "b", 2.0, 3.0, order=4),
        Interaction("u", "a", 3.0, 5.0, order=5),  # the same item again, later: kept outside benchmarks
    ]
    plan = SourcePlan("ml", source(tmp_path / "ml", items, rows), MOVIELENS)
    db = engine(tmp_path, [plan])
    [(_, _, lines, orders)] = list(db.pretraining())
    assert orders == [1, 4, 5] and lines[0] == "Title: Heat (1995); Review: Tense; Rating: 4.0/5.0"
    assert (db.counts["ml"]["duplicate_interaction"], db.counts["ml"]["repeated_item_interaction"]) == (2, 0)
    bench = engine(tmp_path / "b", [SourcePlan("ml", plan.folder, MOVIELENS, benchmark=("leave_one_out",))])
    [history] = list(bench.histories())
    # In a benchmark a user's item is one event, the earliest: the held-out last item is new to the user.
    assert [(e.item_id, e.order, e.next_item) for e in history.events] == [("a", 1, "validation"), ("b", 4, "test")]
    assert (bench.counts["ml"]["duplicate_interaction"], bench.counts["ml"]["repeated_item_interaction"]) == (2, 1)


def test_leak_check_compares_content_not_file_order(tmp_path: Path):
    items = [Item(str(i), f"Item {i}") for i in range(5)]
    folder = source(tmp_path / "bench", items, events("u", "01234", [1, 2, 3, 4, 5]))
    db = engine(tmp_path, [SourcePlan("bench", folder, SHOP, benchmark=("leave_one_out",))])
    keys = tmp_path / "keys.parquet"
    pq.write_table(pa.table([["bench"] * 3, ["u"] * 3, [0, 1, 2]], schema=KEY_SCHEMA), keys)
    assert db.leaked(keys) == []
    # A trained event (order 0) that names the test target's item, or renders to its line, is a leak.
    db.connection.execute("UPDATE events SET item_id = '4' WHERE ord = 0")
    assert db.leaked(keys) == [("bench", "u", 4, "test")]
    db.connection.execute("UPDATE events SET item_id = '0', line = (SELECT line FROM events WHERE ord = 3)")
    assert db.leaked(keys) == [("bench", "u", 3, "validation"), ("bench", "u", 4, "test")]
