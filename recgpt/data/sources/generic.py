"""Your own logs: CSV / TSV, JSON lines or Parquet files, mapped to recgpt's records by a column map in YAML.

Example source entry of a data config::

    - name: shop
      format: generic
      paths: {interactions: logs/events.parquet, items: logs/catalogue.csv}
      options:
        interaction_columns: {user_id: customer, item_id: sku, timestamp: ts, rating: stars, review: text}
        item_columns: {item_id: sku, title: name, attributes: {Brand: brand}}
        timestamp_unit: s          # or ms; date strings (ISO 8601 and others) are parsed either way
        domain: {name: shop, noun: products, rating_scale: 5.0, identifying: [Brand]}

``timestamp``, ``rating`` and ``review`` may be omitted (null); without timestamps, file order is the order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from recgpt.data.records import Domain
from recgpt.data.sources.readers import (
    Limits,
    Options,
    Paths,
    RecordSink,
    SourceFormatError,
    csv_records,
    domain_from_options,
    json_records,
    make_interaction,
    make_item,
    parse_time,
)

DEFAULT_DOMAIN = Domain("generic", "items", 5.0)


def rows(path: Path, sink: RecordSink, options: Mapping[str, Any]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Rows of a CSV/TSV, JSON-lines or Parquet file (by suffix, ``.gz`` allowed) with their line or row number."""
    suffixes = [s for s in path.suffixes if s != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind == ".parquet":
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536):
            for row in batch.to_pylist():
                number += 1
                yield number, row
    elif kind in {".jsonl", ".json", ".ndjson"}:
        yield from json_records(path, sink)
    elif kind in {".csv", ".tsv", ".txt"}:
        delimiter = options.get("delimiter", "\t" if kind == ".tsv" else ",")
        yield from csv_records(path, sink, encoding=options.get("encoding", "utf-8"), delimiter=delimiter)
    else:
        raise SourceFormatError(f"{path}: unknown file type {kind!r}; use .csv, .tsv, .jsonl or .parquet")


def _column_map(options: Mapping[str, Any], key: str, required: tuple[str, ...]) -> dict[str, Any]:
    mapping = dict(options.get(key) or {})
    missing = [name for name in required if not mapping.get(name)]
    if missing:
        raise SourceFormatError(f"options.{key}: map {missing} to column names")
    return mapping


def read_generic(paths: Paths, sink: RecordSink, options: Options, limits: Limits) -> Domain:
    """Generic logs: ``paths`` has ``interactions`` and ``items``; ``options`` maps the columns (module docs)."""
    domain = domain_from_options(options.get("domain"), DEFAULT_DOMAIN)
    icols = _column_map(options, "item_columns", ("item_id", "title"))
    ecols = _column_map(options, "interaction_columns", ("user_id", "item_id"))
    unit = options.get("timestamp_unit", "s")
    attributes: Mapping[str, str] = icols.get("attributes") or {}
    for line, row in rows(paths["items"], sink, options):
        _check_columns(paths["items"], line, row, [icols["item_id"], icols["title"], *attributes.values()])
        make_item(
            sink,
            paths["items"],
            line,
            row.get(icols["item_id"]),
            row.get(icols["title"]),
            [(label, row.get(column)) for label, column in attributes.items()],
            limits,
        )
    has_time = bool(ecols.get("timestamp"))
    for line, row in rows(paths["interactions"], sink, options):
        mapped = [ecols.get(key) for key in ("user_id", "item_id", "timestamp", "rating", "review")]
        _check_columns(paths["interactions"], line, row, [column for column in mapped if column])
        make_interaction(
            sink,
            paths["interactions"],
            line,
            domain,
            user_id=row.get(ecols["user_id"]),
            item_id=row.get(ecols["item_id"]),
            timestamp=parse_time(row.get(ecols["timestamp"]), unit) if has_time else None,
            rating=row.get(ecols["rating"]) if ecols.get("rating") else None,
            review=row.get(ecols["review"]) if ecols.get("review") else None,
            limits=limits,
            timestamp_required=has_time,
        )
    return domain


def _check_columns(path: Path, line: int, row: Mapping[str, Any], columns: list[str]) -> None:
    if line <= 2:  # the first data row shows the layout; a mapped column missing there is a config error
        missing = [column for column in columns if column not in row]
        if missing:
            raise SourceFormatError(f"{path}: mapped column(s) {missing} not in the file; it has {list(row)}")
