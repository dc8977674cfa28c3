"""The out-of-core stage: DuckDB cleans, splits and orders every source's interactions under a memory limit.

Input: each source's ingest folder (``items.parquet``, ``interactions.parquet``, see ``recgpt.data.ingest``).
Steps, all in SQL (the corpus does not fit in memory):

1. items: duplicate ids keep their first row; items whose next-item line is identical merge into the first;
2. interactions: unknown or untitled items dropped, exact duplicate events dropped (the first kept), users of
   excluded sources removed, users with fewer than ``min_user_interactions`` events dropped;
3. order: per user by timestamp, ties by file order (never by item id);
4. splits: non-benchmark users go to pre-training or fine-tuning by a seeded hash of the user id; benchmark
   sources hold out events by leave-one-out (last = test, second-to-last = validation; the next-item task, and
   the rating task too when it is the only protocol) and/or a random 80/10/10 split of rated events (the rating
   task, P5's protocol); every held-out event of either protocol is kept out of all training text (RecGPT's fix);
5. each event's full line is rendered in SQL by ``recgpt.data.render.sql_event_line``.

``histories()`` then streams one user at a time, in a fixed order, to the writers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from recgpt.data.records import Domain, Item
from recgpt.data.render import render_item, render_item_prefix, sql_event_line

log = logging.getLogger(__name__)

LEAVE_ONE_OUT = "leave_one_out"
RANDOM_SPLIT = "random_80_10_10"
PROTOCOLS = (LEAVE_ONE_OUT, RANDOM_SPLIT)


class LeakageError(RuntimeError):
    """A held-out interaction reached training text."""


@dataclass(frozen=True)
class SourcePlan:
    """One ingested source and what to do with it.

    Attributes:
        name: The source's name (letters, digits, ``_.-``).
        folder: Its ingest folder.
        domain: Its wording.
        benchmark: Evaluation protocols of this source (empty: a pre-training / fine-tuning source).
        exclude_users_of: Sources whose users are removed from this one (an older benchmark release).
    """

    name: str
    folder: Path
    domain: Domain
    benchmark: tuple[str, ...] = ()
    exclude_users_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class Event:
    """One event of a streamed history.

    Attributes:
        item_id: Canonical item id.
        text: The item's next-item line (``render_item``).
        line: The event's full line (``render_event``).
        hidden: The full line with its rating removed (the rating task's target line).
        rating: The rating, or None.
        order: Position in the source file (the leak check's key with the user).
        next_item: ``"validation"``/``"test"`` when held out by leave-one-out, else None.
        rating_split: ``"validation"``/``"test"`` when held out by the random split, else None.
    """

    item_id: str
    text: str
    line: str
    hidden: str
    rating: float | None
    order: int
    next_item: str | None
    rating_split: str | None

    @property
    def held_out(self) -> bool:
        """Whether any protocol holds this event out of training."""
        return self.next_item is not None or self.rating_split is not None


@dataclass
class UserHistory:
    """A user's events in order, with the user's group (``pretrain``, ``finetune`` or ``benchmark``)."""

    source: str
    user_id: str
    group: str
    events: list[Event] = field(default_factory=list)


def _connect(work: Path, memory_limit: str, threads: int | None) -> Any:
    import duckdb

    work.mkdir(parents=True, exist_ok=True)
    connection = duckdb.connect(str(work / "engine.duckdb"))
    connection.execute(f"SET memory_limit = '{memory_limit}'")
    connection.execute(f"SET temp_directory = '{work / 'spill'}'")
    connection.execute("SET preserve_insertion_order = true")
    if threads:
        connection.execute(f"SET threads = {int(threads)}")
    return connection


def render_items(plan: SourcePlan, batch_size: int = 100_000) -> Path:
    """Add each item's next-item line and full-line prefix (rendered by ``recgpt.data.render``) to a Parquet file."""
    output = plan.folder / "items_rendered.parquet"
    schema = pa.schema(
        [
            ("item_id", pa.string()),
            ("title", pa.string()),
            ("attributes", pa.string()),
            ("text", pa.string()),
            ("prefix", pa.string()),
            ("rn", pa.int64()),
        ]
    )
    position = 0
    with pq.ParquetWriter(output, schema) as writer:
        for batch in pq.ParquetFile(plan.folder / "items.parquet").iter_batches(batch_size=batch_size):
            ids, titles, attributes, texts, prefixes, positions = [], [], [], [], [], []
            for row in batch.to_pylist():
                item = Item(row["item_id"], row["title"], tuple(tuple(pair) for pair in json.loads(row["attributes"])))
                ids.append(item.item_id)
                titles.append(item.title)
                attributes.append(json.dumps(dict(item.attributes), ensure_ascii=False))
                texts.append(render_item(item, plan.domain))
                prefixes.append(render_item_prefix(item))
                positions.append(position)
                position += 1
            writer.write_table(pa.table([ids, titles, attributes, texts, prefixes, positions], schema=schema))
    return output


class Engine:
    """The DuckDB database of one preparation run (a file under ``work``, spilling to ``work/spill``)."""

    def __init__(self, work: Path, memory_limit: str = "2GB", threads: int | None = None) -> None:
        self.connection = _connect(work, memory_limit, threads)
        self.counts: dict[str, dict[str, int]] = {}

    def scalar(self, sql: str, parameters: Sequence[Any] = ()) -> Any:
        """The single value of a query."""
        return self.connection.execute(sql, list(parameters)).fetchall()[0][0]

    def stream(self, sql: str, parameters: Sequence[Any] = (), batch_size: int = 50_000) -> Any:
        """A query's rows as Arrow record batches, produced as they are read (never the whole result at once)."""
        return self.connection.sql(sql, params=list(parameters) or None).to_arrow_reader(batch_size)

    def load(
        self,
        plans: Sequence[SourcePlan],
        min_user_interactions: int,
        finetune_fraction: float,
        seed: int,
        max_users: int | None = None,
    ) -> None:
        """Run steps 1-5 for every source into the table ``events`` (``max_users``: a seeded sample per source)."""
        sql = self.connection.execute
        sql(
            "CREATE OR REPLACE TABLE catalog (source VARCHAR, item_id VARCHAR, title VARCHAR, attributes VARCHAR, "
            "text VARCHAR)"
        )
        sql(
            "CREATE OR REPLACE TABLE events (source VARCHAR, user_id VARCHAR, item_id VARCHAR, text VARCHAR, "
            "line VARCHAR, hidden VARCHAR, ts DOUBLE, rating DOUBLE, ord BIGINT, pos BIGINT, n BIGINT, "
            "user_group VARCHAR, next_item VARCHAR, rating_split VARCHAR)"
        )
        staged = {plan.name: self._stage(plan) for plan in plans}
        for plan in plans:
            self._finish(plan, staged, min_user_interactions, finetune_fraction, seed, max_users)
        for name in staged:
            sql(f'DROP TABLE IF EXISTS "stage_{name}"')

    def _stage(self, plan: SourcePlan) -> str:
        """Items and de-duplicated events of one source, before user-level filters (steps 1-2)."""
        sql = self.connection.execute
        items = render_items(plan)
        interactions = plan.folder / "interactions.parquet"
        sql(f"""CREATE OR REPLACE TEMP TABLE items_src AS
            SELECT item_id, title, attributes, text, prefix, rn FROM read_parquet('{items}')
            QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY rn) = 1""")
        sql("""CREATE OR REPLACE TEMP TABLE items_canon AS
            SELECT i.item_id, c.item_id AS canonical, c.text, c.prefix FROM items_src i
            JOIN (SELECT text, arg_min(item_id, rn) AS item_id, arg_min(prefix, rn) AS prefix
                  FROM items_src GROUP BY text) c USING (text)""")
        sql(f"""INSERT INTO catalog SELECT '{plan.name}', item_id, title, attributes, text FROM items_src
            WHERE item_id IN (SELECT canonical FROM items_canon)""")
        rows_in = self.scalar(f"SELECT count(*) FROM read_parquet('{interactions}')")
        line = sql_event_line("c.prefix", "e.review", "e.rating", plan.domain.rating_scale)
        hidden = sql_event_line("c.prefix", "e.review", "NULL", plan.domain.rating_scale)
        sql(f"""CREATE OR REPLACE TABLE "stage_{plan.name}" AS
            SELECT e.user_id, c.canonical AS item_id, c.text, {line} AS line, {hidden} || '; Rating:' AS hidden,
                   e.timestamp AS ts, e.rating, e.ord
            FROM read_parquet('{interactions}') e JOIN items_canon c ON c.item_id = e.item_id
            QUALIFY row_number() OVER (PARTITION BY e.user_id, c.canonical, e.timestamp, e.rating, e.review
                                       ORDER BY e.ord) = 1""")
        kept = self.scalar(f'SELECT count(*) FROM "stage_{plan.name}"')
        known = self.scalar(
            f"SELECT count(*) FROM read_parquet('{interactions}') e "
            "WHERE e.item_id IN (SELECT item_id FROM items_canon)"
        )
        self.counts[plan.name] = {
            "interactions_in": rows_in,
            "unknown_or_untitled_item": rows_in - known,
            "duplicate_interaction": known - kept,
            "duplicate_item": self.scalar("SELECT count(*) FROM items_canon WHERE item_id <> canonical"),
            "items": self.scalar("SELECT count(DISTINCT canonical) FROM items_canon"),
        }
        return f'"stage_{plan.name}"'

    def _finish(
        self,
        plan: SourcePlan,
        staged: dict[str, str],
        min_user_interactions: int,
        finetune_fraction: float,
        seed: int,
        max_users: int | None,
    ) -> None:
        """User filters, order and splits of one source into ``events`` (steps 2-4)."""
        table = staged[plan.name]
        unknown = [name for name in plan.exclude_users_of if name not in staged]
        if unknown:
            raise ValueError(f"source '{plan.name}': exclude_users_of names unknown source(s) {unknown}")
        excluded = " UNION ".join(f"SELECT user_id FROM {staged[name]}" for name in plan.exclude_users_of)
        exclusion = f"WHERE user_id NOT IN ({excluded})" if excluded else ""
        threshold = round(finetune_fraction * 1_000_000)
        group = (
            "'benchmark'"
            if plan.benchmark
            else f"CASE WHEN md5_number('{seed}|{plan.name}|' || user_id) % 1000000 < {threshold} "
            "THEN 'finetune' ELSE 'pretrain' END"
        )
        next_item = (
            "CASE WHEN pos = n - 1 THEN 'test' WHEN pos = n - 2 THEN 'validation' END"
            if LEAVE_ONE_OUT in plan.benchmark
            else "NULL"
        )
        bucket = f"md5_number('{seed}|{plan.name}|' || user_id || '|' || ord) % 10"
        if RANDOM_SPLIT in plan.benchmark:
            rating_split = (
                f"CASE WHEN rating IS NULL THEN NULL WHEN {bucket} = 9 THEN 'test' "
                f"WHEN {bucket} = 8 THEN 'validation' END"
            )
        else:  # with leave-one-out alone, the rating task is evaluated on the held-out last events too
            rating_split = f"CASE WHEN rating IS NOT NULL THEN {next_item} END"
        sample = (
            ""
            if max_users is None
            else f"WHERE user_id IN (SELECT user_id FROM (SELECT DISTINCT user_id FROM dense) "
            f"ORDER BY md5('{seed}|{plan.name}|' || user_id), user_id LIMIT {int(max_users)})"
        )
        before = self.scalar(f"SELECT count(*) FROM {table}")
        self.connection.execute(f"""INSERT INTO events
            WITH kept AS (SELECT * FROM {table} {exclusion}),
            dense AS (SELECT * FROM kept QUALIFY count(*) OVER (PARTITION BY user_id) >= {int(min_user_interactions)}),
            sampled AS (SELECT * FROM dense {sample}),
            ordered AS (SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY ts NULLS FIRST, ord) - 1 AS pos,
                               count(*) OVER (PARTITION BY user_id) AS n FROM sampled)
            SELECT '{plan.name}', user_id, item_id, text, line, hidden, ts, rating, ord, pos, n, {group},
                   {next_item}, {rating_split}
            FROM ordered""")
        excluded_rows = before - self.scalar(f"SELECT count(*) FROM {table} {exclusion}")
        after = self.scalar("SELECT count(*) FROM events WHERE source = ?", [plan.name])
        dense = self.scalar(f"""SELECT count(*) FROM (SELECT user_id FROM {table} {exclusion}
            QUALIFY count(*) OVER (PARTITION BY user_id) >= {int(min_user_interactions)})""")
        self.counts[plan.name].update(
            {
                "excluded_user_interaction": excluded_rows,
                "sparse_user_interaction": before - excluded_rows - dense,
                "unsampled_user_interaction": dense - after,
                "interactions_out": after,
                "users": self.scalar("SELECT count(DISTINCT user_id) FROM events WHERE source = ?", [plan.name]),
            }
        )
        log.info("%s: %s", plan.name, self.counts[plan.name])

    def histories(self, batch_size: int = 50_000) -> Iterator[UserHistory]:
        """Every user's history, ordered by source, user id and position; one user in memory at a time."""
        reader = self.stream(
            "SELECT source, user_id, user_group, item_id, text, line, hidden, rating, ord, next_item, rating_split "
            "FROM events ORDER BY source, user_id, pos",
            batch_size=batch_size,
        )
        current: UserHistory | None = None
        for batch in reader:
            columns = batch.to_pydict()
            for index in range(batch.num_rows):
                source, user = columns["source"][index], columns["user_id"][index]
                if current is None or (current.source, current.user_id) != (source, user):
                    if current is not None:
                        yield current
                    current = UserHistory(source, user, columns["user_group"][index])
                current.events.append(
                    Event(
                        columns["item_id"][index],
                        columns["text"][index],
                        columns["line"][index],
                        columns["hidden"][index],
                        columns["rating"][index],
                        columns["ord"][index],
                        columns["next_item"][index],
                        columns["rating_split"][index],
                    )
                )
        if current is not None:
            yield current

    def item_rows(self, source: str) -> Iterator[dict[str, Any]]:
        """The catalogue of a source after cleaning (items some kept event names), in id order."""
        reader = self.stream(
            "SELECT item_id, title, attributes, text FROM catalog WHERE source = ? AND item_id IN "
            "(SELECT item_id FROM events WHERE source = ?) ORDER BY item_id",
            [source, source],
        )
        for batch in reader:
            for row in batch.to_pylist():
                yield {**row, "attributes": json.loads(row["attributes"])}

    def training_lines(self, batch_size: int = 50_000) -> Iterator[str]:
        """Full lines of every event that is not held out (what a tokenizer is trained on), in a fixed order."""
        reader = self.stream(
            "SELECT line FROM events WHERE next_item IS NULL AND rating_split IS NULL ORDER BY source, user_id, pos",
            batch_size=batch_size,
        )
        for batch in reader:
            yield from batch.column(0).to_pylist()

    def leaked(self, trained_keys: Path, limit: int = 5) -> list[tuple[str, str, int, str]]:
        """Held-out events found among the keys of the events used in training text (should be none)."""
        return self.connection.execute(f"""
            SELECT e.source, e.user_id, e.ord, coalesce(e.next_item, e.rating_split)
            FROM read_parquet('{trained_keys}') k
            JOIN events e ON e.source = k.source AND e.user_id = k.user_id AND e.ord = k.ord
            WHERE e.next_item IS NOT NULL OR e.rating_split IS NOT NULL
            ORDER BY 1, 2, 3 LIMIT {int(limit)}""").fetchall()

    def close(self) -> None:
        """Close the database."""
        self.connection.close()
