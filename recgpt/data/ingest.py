"""Ingest: run a source adapter and stream its records into Parquet files, its rejects into JSON lines.

Nothing a source produces is held in memory: records are buffered in batches and written as Parquet row groups,
which the DuckDB stage (``recgpt.data.engine``) then reads out of core. Every item row keeps its file and line, so a
later row repeating an item id is rejected as ``duplicate_item_id`` where it is (the first row of an id wins).
Every error of a source's files is raised as ``SourceFormatError`` starting ``source '<name>': ``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from recgpt.data.duckdb_settings import check_memory_limit, connect
from recgpt.data.records import Domain, Interaction, Item
from recgpt.data.render import json_line
from recgpt.data.sources import adapter
from recgpt.data.sources.readers import Limits, SourceFormatError

log = logging.getLogger(__name__)

ITEM_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("attributes", pa.string()),
        ("file", pa.string()),
        ("line", pa.int64()),
    ]
)
INTERACTION_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("timestamp", pa.float64()),
        ("rating", pa.float64()),
        ("review", pa.string()),
        ("ord", pa.int64()),
    ]
)


@dataclass
class IngestResult:
    """What one source produced.

    Attributes:
        domain: The source's wording.
        items: Items written.
        interactions: Interactions written.
        rejects: Skipped rows by reason.
        folder: Where ``items.parquet``, ``interactions.parquet`` and ``rejects.jsonl`` are.
    """

    domain: Domain
    items: int = 0
    interactions: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    folder: Path = Path()


class ParquetSink:
    """A ``RecordSink`` writing Parquet row groups of ``batch_size`` records and a rejects file."""

    def __init__(self, folder: Path, source: str, batch_size: int = 100_000) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.source = source
        self.batch_size = batch_size
        self.item_writer = pq.ParquetWriter(folder / "items.parquet", ITEM_SCHEMA)
        self.event_writer = pq.ParquetWriter(folder / "interactions.parquet", INTERACTION_SCHEMA)
        self.rejects_file = (folder / "rejects.jsonl").open("w", encoding="utf-8")
        self.items: list[tuple[Item, str, int]] = []
        self.events: list[Interaction] = []
        self.counts = {"items": 0, "interactions": 0}
        self.rejects: Counter[str] = Counter()

    def item(self, item: Item, file: Path | None = None, line: int = 0) -> None:
        """Buffer an item read from ``line`` of ``file``."""
        self.items.append((item, str(file or ""), line))
        if len(self.items) >= self.batch_size:
            self._flush_items()

    def interaction(self, event: Interaction) -> None:
        """Buffer an interaction."""
        self.events.append(event)
        if len(self.events) >= self.batch_size:
            self._flush_events()

    def reject(self, file: Path, line: int, reason: str, field: str = "", excerpt: str = "") -> None:
        """Count a rejected row and write where it was and why."""
        self.rejects[reason] += 1
        record = {
            "source": self.source,
            "file": str(file),
            "line": line,
            "reason": reason,
            "field": field,
            "excerpt": excerpt,
        }
        self.rejects_file.write(json_line(record))

    def _flush_items(self) -> None:
        if self.items:
            columns: dict[str, list[Any]] = {
                "item_id": [i.item_id for i, _, _ in self.items],
                "title": [i.title for i, _, _ in self.items],
                "attributes": [json.dumps(i.attributes, ensure_ascii=False) for i, _, _ in self.items],
                "file": [file for _, file, _ in self.items],
                "line": [line for _, _, line in self.items],
            }
            self.item_writer.write_table(pa.table(columns, schema=ITEM_SCHEMA))
            self.counts["items"] += len(self.items)
            self.items = []

    def _flush_events(self) -> None:
        if self.events:
            columns: dict[str, list[Any]] = {
                "user_id": [e.user_id for e in self.events],
                "item_id": [e.item_id for e in self.events],
                "timestamp": [e.timestamp for e in self.events],
                "rating": [e.rating for e in self.events],
                "review": [e.review for e in self.events],
                "ord": [e.order for e in self.events],
            }
            self.event_writer.write_table(pa.table(columns, schema=INTERACTION_SCHEMA))
            self.counts["interactions"] += len(self.events)
            self.events = []

    def close(self) -> None:
        """Flush and close every file."""
        self._flush_items()
        self._flush_events()
        self.item_writer.close()
        self.event_writer.close()
        self.rejects_file.close()


def ingest_source(
    name: str,
    format_name: str,
    paths: dict[str, Path],
    options: dict[str, Any],
    folder: Path,
    limits: Limits,
    memory_limit: str = "2GB",
) -> IngestResult:
    """Read one source with its adapter into ``folder``.

    Raises:
        SourceFormatError: For wrong paths or options (named), or a dump that cannot be read; the message starts
            ``source '<name>': `` and names the file (and line where there is one).
        ValueError: For a malformed ``memory_limit`` (named).
    """
    check_memory_limit(memory_limit)  # before reading anything: the limit is checked once, where SQL begins
    try:
        result = _ingest(name, format_name, paths, options, folder, limits, memory_limit)
    except SourceFormatError as error:
        message = str(error)
        raise SourceFormatError(message if message.startswith("source '") else f"source '{name}': {message}") from error
    duplicates = reject_duplicate_items(folder, name, memory_limit)
    if duplicates:
        result.items -= duplicates
        result.rejects["duplicate_item_id"] += duplicates
    log.info(
        "%s: %d items, %d interactions, %d rejected rows",
        name,
        result.items,
        result.interactions,
        sum(result.rejects.values()),
    )
    return result


def _ingest(
    name: str,
    format_name: str,
    paths: dict[str, Path],
    options: dict[str, Any],
    folder: Path,
    limits: Limits,
    memory_limit: str,
) -> IngestResult:
    source_adapter = adapter(format_name)
    source_adapter.check(name, paths, options)
    if source_adapter.native:
        result = _ingest_native(source_adapter, name, paths, options, folder, limits, memory_limit)
    else:
        sink = ParquetSink(folder, name)
        try:
            domain = source_adapter.load()(paths, sink, options, limits)
        finally:
            sink.close()
        result = IngestResult(domain, sink.counts["items"], sink.counts["interactions"], sink.rejects, folder)
    return result


def reject_duplicate_items(folder: Path, source: str, memory_limit: str = "2GB") -> int:
    """Reject every catalogue row whose item id an earlier row already has (the first row wins).

    The rows stay in ``items.parquet`` (the engine keeps the first of each id); each later one is appended to
    ``rejects.jsonl`` as ``duplicate_item_id`` with its file and line.

    Returns:
        The number of rows rejected.
    """
    connection = connect(folder / "spill", memory_limit)
    try:
        reader = connection.sql(
            """SELECT file, line, item_id, title FROM read_parquet($items, file_row_number = true)
            QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY file_row_number) > 1
            ORDER BY file_row_number""",
            params={"items": str(folder / "items.parquet")},
        ).to_arrow_reader(10_000)
        count = 0
        with (folder / "rejects.jsonl").open("a", encoding="utf-8") as handle:
            for batch in reader:
                for file, line, item_id, title in zip(*batch.to_pydict().values(), strict=True):
                    record = {"source": source, "file": file, "line": line, "reason": "duplicate_item_id"}
                    handle.write(json_line({**record, "field": "item_id", "excerpt": f"{item_id}: {title}"[:200]}))
                    count += 1
    finally:
        connection.close()
    return count


def describe_duckdb_error(error: Exception) -> str:
    """DuckDB's reading error in one line: what went wrong, on which line of which file (its ``file =``)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    where = next((line.split("=", 1)[1].strip() for line in lines if line.startswith("file =")), None)
    cause = next((line for line in lines[1:] if not line.startswith(("Original Line", "Possible Solution"))), "")
    return "; ".join(part for part in (where, lines[0] if lines else str(error), cause) if part)


def _ingest_native(
    source_adapter: Any,
    name: str,
    paths: dict[str, Path],
    options: dict[str, Any],
    folder: Path,
    limits: Limits,
    memory_limit: str,
) -> IngestResult:
    """Run a DuckDB-native adapter (``Adapter.native``) under the memory limit, spilling beside ``folder``."""
    import duckdb

    folder.mkdir(parents=True, exist_ok=True)
    connection = connect(folder / "spill", memory_limit)
    try:
        domain, counts, rejects = source_adapter.load()(paths, folder, options, limits, connection)
    except duckdb.Error as error:  # unreadable files: bad encoding, broken quoting, wrong types
        raise SourceFormatError(f"source '{name}': {describe_duckdb_error(error)}") from error
    finally:
        connection.close()
    return IngestResult(domain, counts["items"], counts["interactions"], rejects, folder)
