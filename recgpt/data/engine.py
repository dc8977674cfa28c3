"""The out-of-core stage: DuckDB cleans, splits and orders every source's interactions under a memory limit.

Input: each source's ingest folder (``items.parquet``, ``interactions.parquet``, see ``recgpt.data.ingest``).
Steps, all in SQL (the corpus does not fit in memory):

1. items: duplicate ids keep their first row (ingest has already rejected the later ones as ``duplicate_item_id``);
   items whose next-item line is identical merge into the first;
2. interactions: unknown or untitled items dropped; events de-duplicated on their identity (user, item, timestamp),
   the first copy in file order kept whatever its rating or review (``duplicate_interaction``; without a
   timestamp, user and item are the identity); in a benchmark
   source, a user's repeated events with the same item keep only the earliest (timestamp, then file order;
   ``repeated_item_interaction``), so a held-out item is never also a training event of its user; users of
   excluded sources removed; users with fewer than ``min_user_interactions`` events dropped;
3. order: per user by timestamp, ties by file order (never by item id);
4. splits: non-benchmark users go to pre-training or fine-tuning by a seeded hash of the user id; benchmark
   sources hold out events by leave-one-out (last = test, second-to-last = validation; the next-item task, and
   the rating task too when it is the only protocol) and/or a random 80/10/10 split of rated events (the rating
   task, P5's protocol); every held-out event of either protocol is kept out of all training text (RecGPT's fix),
   and ``leaked`` proves it by content: no training text of a user holds a held-out event's item or line;
5. each event's full line is rendered in SQL by ``recgpt.data.render.sql_event_line`` from text normalised at
   ingest (``recgpt.data.render.clean_text``).

Nothing from a config or a dump is pasted into SQL: values travel as query parameters, per-source table names are
quoted identifiers (``table_name``), and ``memory_limit`` / ``threads`` are checked before DuckDB sees them.

``histories()`` then streams one user at a time, in a fixed order, to the writers.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from recgpt.data.duckdb_settings import check_memory_limit, connect
from recgpt.data.histories import (
    HISTORY_COLUMNS,
    WRITER_BATCH_ROWS,
    UserHistory,
    pretraining_users,
    user_histories,
)
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


IDLE_MEMORY_LIMIT = "64MB"  # the engine's memory while the writing workers run (``Engine.idle``)


def table_name(prefix: str, source: str) -> str:
    """The quoted SQL identifier of a per-source table (any source name is safe: quotes are doubled)."""
    return '"' + f"{prefix}_{source}".replace('"', '""') + '"'


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
        work.mkdir(parents=True, exist_ok=True)
        # In memory: under the limit DuckDB evicts its blocks to ``work/spill``, and nothing needs to outlive the
        # run (measured faster than a database file at 10M interactions, bench/prep.py).
        self.connection = connect(work / "spill", memory_limit, threads)
        self.memory_limit = check_memory_limit(memory_limit)
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
            "user_group VARCHAR, next_item VARCHAR, rating_split VARCHAR, user_key UBIGINT)"
        )
        staged = {plan.name: self._stage(plan) for plan in plans}
        for plan in plans:
            self._finish(plan, staged, min_user_interactions, finetune_fraction, seed, max_users)
        for name in staged:
            sql(f"DROP TABLE IF EXISTS {table_name('stage', name)}")
            sql(f"DROP TABLE IF EXISTS {table_name('items', name)}")

    def _sql(self, query: str, values: dict[str, Any]) -> Any:
        """Run ``query`` with the named parameters (``$name``) it uses out of ``values``."""
        return self.connection.execute(query, {k: v for k, v in values.items() if f"${k}" in query} or None)

    def _stage(self, plan: SourcePlan) -> str:
        """Items and de-duplicated events of one source, before user-level filters (steps 1-2)."""
        canon, stage = table_name("items", plan.name), table_name("stage", plan.name)
        values = {"items": str(render_items(plan)), "events": str(plan.folder / "interactions.parquet")}
        values["source"] = plan.name
        self._sql(
            """CREATE OR REPLACE TEMP TABLE items_src AS
            SELECT item_id, title, attributes, text, prefix, rn FROM read_parquet($items)
            QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY rn) = 1""",
            values,
        )
        self._sql(
            f"""CREATE OR REPLACE TABLE {canon} AS
            SELECT i.item_id, c.item_id AS canonical, c.text, c.prefix FROM items_src i
            JOIN (SELECT text, arg_min(item_id, rn) AS item_id, arg_min(prefix, rn) AS prefix
                  FROM items_src GROUP BY text) c USING (text)""",
            values,
        )
        self._sql(
            f"""INSERT INTO catalog SELECT $source, item_id, title, attributes, text FROM items_src
            WHERE item_id IN (SELECT canonical FROM {canon})""",
            values,
        )
        rows_in = self._sql("SELECT count(*) FROM read_parquet($events)", values).fetchall()[0][0]
        # One event per identity (user, item, time), the first in file order; in a benchmark, one per (user, item),
        # the earliest, so no held-out event's item is also a training event of its user (see the module docstring).
        repeat = (
            "row_number() OVER (PARTITION BY e.user_id, c.canonical ORDER BY e.timestamp NULLS FIRST, e.ord)"
            if plan.benchmark
            else "1"
        )
        self._sql(
            f"""CREATE OR REPLACE TABLE {stage} AS
            SELECT e.user_id, c.canonical AS item_id, e.timestamp AS ts, e.rating, e.review, e.ord,
                   row_number() OVER (PARTITION BY e.user_id, c.canonical, e.timestamp ORDER BY e.ord) AS copy,
                   {repeat} AS repeat
            FROM read_parquet($events) e JOIN {canon} c ON c.item_id = e.item_id""",
            values,
        )
        known, copies, repeats = self._sql(
            f"SELECT count(*), count(*) FILTER (copy > 1), count(*) FILTER (copy = 1 AND repeat > 1) FROM {stage}",
            values,
        ).fetchall()[0]
        self._sql(f"DELETE FROM {stage} WHERE copy > 1 OR repeat > 1", values)
        self.counts[plan.name] = {
            "interactions_in": rows_in,
            "unknown_or_untitled_item": rows_in - known,
            "duplicate_interaction": copies,
            "repeated_item_interaction": repeats,
            "duplicate_item": self.scalar(f"SELECT count(*) FROM {canon} WHERE item_id <> canonical"),
            "items": self.scalar(f"SELECT count(DISTINCT canonical) FROM {canon}"),
        }
        return stage

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
        values = {"source": plan.name, "salt": f"{int(seed)}|{plan.name}|"}
        threshold = round(float(finetune_fraction) * 1_000_000)
        group = (
            "'benchmark'"
            if plan.benchmark
            else f"CASE WHEN user_hash % 1000000 < {threshold} THEN 'finetune' ELSE 'pretrain' END"
        )
        next_item = (
            "CASE WHEN pos = n - 1 THEN 'test' WHEN pos = n - 2 THEN 'validation' END"
            if LEAVE_ONE_OUT in plan.benchmark
            else "NULL"
        )
        bucket = "md5_number($salt || user_id || '|' || ord) % 10"
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
        # One pass over the events per user decides who stays: not excluded, dense enough, in the sample.
        self._sql(
            f"""CREATE OR REPLACE TEMP TABLE users AS
            SELECT *, NOT excluded AND n >= {int(min_user_interactions)} AS dense
            FROM (SELECT user_id, count(*) AS n, user_id IN ({excluded}) AS excluded FROM {table} GROUP BY user_id)""",
            values,
        )
        sample = (
            ""
            if max_users is None
            else (
                "AND user_id IN (SELECT user_id FROM users WHERE dense "
                f"ORDER BY md5($salt || user_id), user_id LIMIT {int(max_users)})"
            )
        )
        # The user's seeded hash decides the group and, by its low 64 bits (``user_key``), the shares and partitions:
        # once per user, as 128-bit arithmetic per event was most of the final insert's and a share export's time.
        self._sql(
            f"""CREATE OR REPLACE TEMP TABLE kept AS
            SELECT user_id, n, {group} AS user_group, CAST(user_hash % 18446744073709551616 AS UBIGINT) AS user_key
            FROM (SELECT user_id, n, md5_number($salt || user_id) AS user_hash FROM users WHERE dense {sample})""",
            values,
        )
        line = sql_event_line("c.prefix", "e.review", "e.rating", plan.domain.rating_scale)
        self._sql(
            f"""INSERT INTO events
            WITH ordered AS (
                SELECT e.*, k.n, k.user_group, k.user_key,
                       row_number() OVER (PARTITION BY e.user_id ORDER BY e.ts NULLS FIRST, e.ord) - 1 AS pos
                FROM {table} e JOIN kept k USING (user_id))
            SELECT $source, e.user_id, e.item_id, c.text, {line} AS line, e.ts, e.rating, e.ord, e.pos, e.n,
                   e.user_group, {next_item}, {rating_split}, e.user_key
            FROM ordered e JOIN {table_name("items", plan.name)} c ON c.item_id = e.item_id
            ORDER BY e.user_id, e.pos""",
            values,
        )
        totals = self.connection.execute(
            """SELECT sum(n), sum(n) FILTER (excluded), sum(n) FILTER (NOT excluded AND NOT dense),
                      (SELECT sum(n) FROM kept), (SELECT count(*) FROM kept) FROM users"""
        ).fetchall()[0]
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

    def _share_sql(self, partition: tuple[int, int] | None) -> str:
        """The WHERE clause keeping partition ``(index, count)`` (0-based) of the users.

        ``events.user_key`` is the low 64 bits of the user's seeded hash ``md5_number(seed|source|user_id)``, the
        user split's own.
        """
        if partition is None:
            return ""
        index, count = partition
        return f" AND events.user_key % {int(count)} = {int(index)}"

    def _pretraining_sql(self, partition: tuple[int, int] | None, extra: str = "") -> str:
        return (
            "SELECT CASE WHEN pos = 0 THEN source END AS source, CASE WHEN pos = 0 THEN user_id END AS user_id, "
            f"line, ord{extra} FROM events WHERE user_group = 'pretrain'{self._share_sql(partition)}"
        )

    def _histories_sql(self, partition: tuple[int, int] | None, extra: str = "") -> str:
        names, where = ", ".join(HISTORY_COLUMNS), self._share_sql(partition)
        return f"SELECT source, user_id, user_group, {names}{extra} FROM events WHERE user_group <> 'pretrain'{where}"

    def pretraining(
        self, batch_size: int = WRITER_BATCH_ROWS, partition: tuple[int, int] | None = None
    ) -> Iterator[tuple[str, str, list[str], list[int]]]:
        """Pre-training users as ``(source, user_id, lines, orders)``, in the order ``events`` holds them.

        The corpus is mostly these users, so only what their documents need crosses into Python: each event's
        line and file order, with the user named on the first event only (``pos = 0`` starts a user). ``events``
        is written sorted by user and position, and a scan without ORDER BY returns insertion order
        (``preserve_insertion_order``), so no second sort is needed. ``partition`` ``(index, count)`` keeps the
        users whose seeded hash (``events.user_key``) is ``index`` modulo ``count``.
        """
        yield from pretraining_users(self.stream(self._pretraining_sql(partition), batch_size=batch_size))

    def histories(
        self, batch_size: int = WRITER_BATCH_ROWS, partition: tuple[int, int] | None = None
    ) -> Iterator[UserHistory]:
        """The fine-tuning and benchmark users' histories, in the order ``events`` holds them (see ``pretraining``)."""
        yield from user_histories(self.stream(self._histories_sql(partition), batch_size=batch_size))

    def export_shares(self, folder: Path, workers: int, partition: tuple[int, int] | None = None) -> list[Path]:
        """Write the users of ``partition`` as ``workers`` disjoint shares, one folder each, in one scan.

        A user goes to share ``(events.user_key // partition_count) % workers`` (the hash's next digit after the
        partition's), so shares split a partition evenly. Each folder holds ``pretraining.parquet`` and
        ``histories.parquet``, the rows of ``pretraining`` and ``histories`` in the same order, which
        ``pretraining_users`` and ``user_histories`` read back.
        """
        count = partition[1] if partition else 1
        extra = f", CAST((events.user_key // {int(count)}) % {int(workers)} AS INTEGER) AS share"
        folders = [folder / f"share-{index:03d}" for index in range(workers)]
        for path in folders:
            path.mkdir(parents=True, exist_ok=True)
        for name, build in (("pretraining", self._pretraining_sql), ("histories", self._histories_sql)):
            reader = self.stream(build(partition, extra))
            schema = reader.schema.remove(reader.schema.get_field_index("share"))
            writers = [pq.ParquetWriter(path / f"{name}.parquet", schema) for path in folders]
            try:
                for batch in reader:
                    shares = batch.column("share").to_numpy()
                    table = pa.Table.from_batches([batch]).drop_columns(["share"])
                    for index, writer in enumerate(writers):
                        part = table.filter(pa.array(shares == index))
                        if part.num_rows:
                            writer.write_table(part)
            finally:
                for writer in writers:
                    writer.close()
        return folders

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

    def leaked(self, trained_keys: Path | Sequence[Path], limit: int = 5) -> list[tuple[str, str, int, str]]:
        """Held-out events whose content reached a training text of their own user (should be none).

        A training text is known by the events it was rendered from (``trained_keys``: Parquet files of source,
        user, order, one per writer). A
        held-out event of either protocol leaks when a trained event of the same user names the same item (a
        next-item target a model has seen) or renders to the same full line (a rating target a model has seen).
        Events are compared by what they render to, never by file order alone. Only the trained events of users
        who have a held-out event can leak, so only those are joined back to ``events`` (a corpus source's users
        have none: the check costs what the benchmark users do, not the whole corpus).

        Returns:
            Up to ``limit`` leaks as ``(source, user_id, order, split)``.
        """
        query = """
            WITH held AS (
                SELECT source, user_id, ord, item_id, line, coalesce(next_item, rating_split) AS split
                FROM events WHERE next_item IS NOT NULL OR rating_split IS NOT NULL),
            held_users AS (SELECT DISTINCT source, user_id FROM held),
            trained AS (
                SELECT DISTINCT e.source, e.user_id, e.item_id, e.line
                FROM read_parquet($keys) k JOIN held_users u USING (source, user_id)
                JOIN events e USING (source, user_id, ord))
            SELECT DISTINCT h.source, h.user_id, h.ord, h.split
            FROM held h JOIN trained t ON t.source = h.source AND t.user_id = h.user_id
                AND (t.item_id = h.item_id OR t.line = h.line)
            ORDER BY 1, 2, 3 LIMIT $limit"""
        paths = [trained_keys] if isinstance(trained_keys, Path) else list(trained_keys)
        return self._sql(query, {"keys": [str(path) for path in paths], "limit": int(limit)}).fetchall()

    @contextlib.contextmanager
    def idle(self, limit: str = IDLE_MEMORY_LIMIT) -> Iterator[None]:
        """Hold at most ``limit`` in memory while other processes work (the writers): DuckDB moves its tables'
        blocks to the spill folder, and reads them back when queried after, under the limit restored here."""
        self.connection.execute("SET memory_limit = ?", [limit])
        try:
            yield
        finally:
            self.connection.execute("SET memory_limit = ?", [self.memory_limit])

    def close(self) -> None:
        """Close the database."""
        self.connection.close()
