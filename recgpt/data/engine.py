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

import functools
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from recgpt.data.records import Domain, Item
from recgpt.data.render import hide_rating, render_item, render_item_prefix, sql_clean_text, sql_event_line

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
        rating: The rating, or None.
        order: Position in the source file (the leak check's key with the user).
        next_item: ``"validation"``/``"test"`` when held out by leave-one-out, else None.
        rating_split: ``"validation"``/``"test"`` when held out by the random split, else None.
    """

    item_id: str
    text: str
    line: str
    rating: float | None
    order: int
    next_item: str | None
    rating_split: str | None

    @property
    def hidden(self) -> str:
        """The full line with its rating removed (the rating task's target line)."""
        return hide_rating(self.line, self.rating is not None)

    @property
    def held_out(self) -> bool:
        """Whether any protocol holds this event out of training."""
        return self.next_item is not None or self.rating_split is not None


HISTORY_COLUMNS = ("item_id", "text", "line", "rating", "ord", "next_item", "rating_split")


@dataclass
class UserHistory:
    """A user's events in order, with the user's group (``pretrain``, ``finetune`` or ``benchmark``).

    The events are held as columns (aligned lists named as ``HISTORY_COLUMNS``), which is how DuckDB hands them
    over; ``events`` builds ``Event`` records from them when a writer wants records.
    """

    source: str
    user_id: str
    group: str
    columns: dict[str, list[Any]] = field(default_factory=dict)

    @functools.cached_property
    def events(self) -> list[Event]:
        """The events as records, oldest first."""
        return [Event(*values) for values in zip(*(self.columns[name] for name in HISTORY_COLUMNS), strict=True)]

    @property
    def has_held_out(self) -> bool:
        """Whether any event is held out (only benchmark users have such events)."""
        return any(self.columns["next_item"]) or any(self.columns["rating_split"])


def _connect(work: Path, memory_limit: str, threads: int | None) -> Any:
    import duckdb

    work.mkdir(parents=True, exist_ok=True)
    # An in-memory database: under the memory limit DuckDB evicts its blocks to ``work/spill``, and nothing
    # needs to outlive the run (measured faster than a database file at 10M interactions, bench/prep.py).
    connection = duckdb.connect(":memory:")
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
    """The DuckDB database of one preparation run (in memory, spilling to ``work/spill`` beyond the limit)."""

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
            "line VARCHAR, ts DOUBLE, rating DOUBLE, ord BIGINT, pos BIGINT, n BIGINT, "
            "user_group VARCHAR, next_item VARCHAR, rating_split VARCHAR)"
        )
        staged = {plan.name: self._stage(plan) for plan in plans}
        for plan in plans:
            self._finish(plan, staged, min_user_interactions, finetune_fraction, seed, max_users)
        for name in staged:
            sql(f'DROP TABLE IF EXISTS "stage_{name}"')
            sql(f'DROP TABLE IF EXISTS "items_{name}"')

    def _stage(self, plan: SourcePlan) -> str:
        """Items and de-duplicated events of one source, before user-level filters (steps 1-2)."""
        sql = self.connection.execute
        items = render_items(plan)
        interactions = plan.folder / "interactions.parquet"
        sql(f"""CREATE OR REPLACE TEMP TABLE items_src AS
            SELECT item_id, title, attributes, text, prefix, rn FROM read_parquet('{items}')
            QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY rn) = 1""")
        sql(f"""CREATE OR REPLACE TABLE "items_{plan.name}" AS
            SELECT i.item_id, c.item_id AS canonical, c.text, c.prefix FROM items_src i
            JOIN (SELECT text, arg_min(item_id, rn) AS item_id, arg_min(prefix, rn) AS prefix
                  FROM items_src GROUP BY text) c USING (text)""")
        canon = f'"items_{plan.name}"'
        sql(f"""INSERT INTO catalog SELECT '{plan.name}', item_id, title, attributes, text FROM items_src
            WHERE item_id IN (SELECT canonical FROM {canon})""")
        rows_in = self.scalar(f"SELECT count(*) FROM read_parquet('{interactions}')")
        # Exact duplicates: the same user, item, time, rating and review text (compared by a 64-bit hash, which is
        # all the window needs to hold; a collision would also need equal user, item, time and rating).
        sql(f"""CREATE OR REPLACE TABLE "stage_{plan.name}" AS
            SELECT e.user_id, c.canonical AS item_id, e.timestamp AS ts, e.rating, e.review, e.ord
            FROM read_parquet('{interactions}') e JOIN {canon} c ON c.item_id = e.item_id
            QUALIFY row_number() OVER (PARTITION BY e.user_id, c.canonical, e.timestamp, e.rating, hash(e.review)
                                       ORDER BY e.ord) = 1""")
        kept = self.scalar(f'SELECT count(*) FROM "stage_{plan.name}"')
        known = self.scalar(
            f"SELECT count(*) FROM read_parquet('{interactions}') e WHERE e.item_id IN (SELECT item_id FROM {canon})"
        )
        self.counts[plan.name] = {
            "interactions_in": rows_in,
            "unknown_or_untitled_item": rows_in - known,
            "duplicate_interaction": known - kept,
            "duplicate_item": self.scalar(f"SELECT count(*) FROM {canon} WHERE item_id <> canonical"),
            "items": self.scalar(f"SELECT count(DISTINCT canonical) FROM {canon}"),
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
        excluded = " UNION ".join(f"SELECT user_id FROM {staged[name]}" for name in plan.exclude_users_of) or (
            "SELECT NULL::VARCHAR AS user_id WHERE false"
        )
        sql = self.connection.execute
        # One pass over the events per user decides who stays: not excluded, dense enough, in the sample.
        sql(f"""CREATE OR REPLACE TEMP TABLE users AS
            SELECT *, NOT excluded AND n >= {int(min_user_interactions)} AS dense
            FROM (SELECT user_id, count(*) AS n, user_id IN ({excluded}) AS excluded FROM {table} GROUP BY user_id)""")
        sample = (
            ""
            if max_users is None
            else (
                f"AND user_id IN (SELECT user_id FROM users WHERE dense "
                f"ORDER BY md5('{seed}|{plan.name}|' || user_id), user_id LIMIT {int(max_users)})"
            )
        )
        sql(f"CREATE OR REPLACE TEMP TABLE kept AS SELECT user_id, n FROM users WHERE dense {sample}")
        line = sql_event_line("c.prefix", "clean_review", "e.rating", plan.domain.rating_scale)
        sql(f"""INSERT INTO events
            WITH ordered AS (
                SELECT e.*, k.n, row_number() OVER (PARTITION BY e.user_id ORDER BY e.ts NULLS FIRST, e.ord) - 1 AS pos
                FROM {table} e JOIN kept k USING (user_id))
            SELECT '{plan.name}', e.user_id, e.item_id, c.text, {line} AS line, e.ts, e.rating, e.ord, e.pos, e.n,
                   {group}, {next_item}, {rating_split}
            FROM (SELECT *, {sql_clean_text("review")} AS clean_review FROM ordered) e
            JOIN "items_{plan.name}" c ON c.item_id = e.item_id
            ORDER BY e.user_id, e.pos""")
        totals = sql("""SELECT sum(n), sum(n) FILTER (excluded), sum(n) FILTER (NOT excluded AND NOT dense),
                               (SELECT sum(n) FROM kept), (SELECT count(*) FROM kept) FROM users""").fetchall()[0]
        before, excluded_rows, sparse, after, users = (int(value or 0) for value in totals)
        self.counts[plan.name].update(
            {
                "excluded_user_interaction": excluded_rows,
                "sparse_user_interaction": sparse,
                "unsampled_user_interaction": before - excluded_rows - sparse - after,
                "interactions_out": after,
                "users": users,
            }
        )
        log.info("%s: %s", plan.name, self.counts[plan.name])

    def pretraining(self, batch_size: int = 200_000) -> Iterator[tuple[str, str, list[str], list[int]]]:
        """Pre-training users as ``(source, user_id, lines, orders)``, in the order ``events`` holds them.

        The corpus is mostly these users, so only what their documents need crosses into Python: each event's
        line and file order, with the user named on the first event only (``pos = 0`` starts a user). ``events``
        is written sorted by user and position, and a scan without ORDER BY returns insertion order
        (``preserve_insertion_order``), so no second sort is needed.
        """
        reader = self.stream(
            "SELECT CASE WHEN pos = 0 THEN source END AS source, CASE WHEN pos = 0 THEN user_id END AS user_id, "
            "line, ord FROM events WHERE user_group = 'pretrain'",
            batch_size=batch_size,
        )
        current: tuple[str, str, list[str], list[int]] | None = None
        for batch in reader:
            columns = batch.to_pydict()
            starts = [index for index, user in enumerate(columns["user_id"]) if user is not None]
            if current is not None and (not starts or starts[0] > 0):  # the user in progress goes on
                end = starts[0] if starts else batch.num_rows
                current[2].extend(columns["line"][:end])
                current[3].extend(columns["ord"][:end])
            for position, start in enumerate(starts):
                if current is not None:
                    yield current
                end = starts[position + 1] if position + 1 < len(starts) else batch.num_rows
                current = (
                    columns["source"][start],
                    columns["user_id"][start],
                    columns["line"][start:end],
                    columns["ord"][start:end],
                )
        if current is not None:
            yield current

    def histories(self, batch_size: int = 100_000) -> Iterator[UserHistory]:
        """The fine-tuning and benchmark users' histories, in the order ``events`` holds them (see ``pretraining``).

        Arrow batches are cut into users by slicing their columns, so Python holds a batch and the user in
        progress, with no record per event.
        """
        names = ", ".join(HISTORY_COLUMNS)
        reader = self.stream(
            f"SELECT source, user_id, user_group, {names} FROM events WHERE user_group <> 'pretrain'",
            batch_size=batch_size,
        )
        pending: UserHistory | None = None
        for batch in reader:
            columns = batch.to_pydict()
            keys = list(zip(columns["source"], columns["user_id"], strict=True))
            start = 0
            for index in range(1, len(keys) + 1):
                if index < len(keys) and keys[index] == keys[start]:
                    continue
                part = {name: columns[name][start:index] for name in HISTORY_COLUMNS}
                if pending is not None and (pending.source, pending.user_id) == keys[start]:
                    for name in HISTORY_COLUMNS:
                        pending.columns[name].extend(part[name])
                else:
                    if pending is not None:
                        yield pending
                    pending = UserHistory(*keys[start], columns["user_group"][start], part)
                start = index
        if pending is not None:
            yield pending

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
            "SELECT line FROM events WHERE next_item IS NULL AND rating_split IS NULL",
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
