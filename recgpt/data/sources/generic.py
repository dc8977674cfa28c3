"""Your own logs: CSV / TSV, JSON lines or Parquet files, mapped to recgpt's records by a column map in YAML.

Example source entry of a data config::

    - name: shop
      format: generic
      paths: {interactions: logs/events.parquet, items: logs/catalogue.csv}
      options:
        interaction_columns: {user_id: customer, item_id: sku, timestamp: ts, rating: stars, review: text}
        item_columns: {item_id: sku, title: name, attributes: {Brand: brand}}
        timestamp_unit: s          # or ms; date strings (ISO 8601 and the formats of readers.DATE_FORMATS) parse too
        domain: {name: shop, noun: products, rating_scale: 5.0, identifying: [Brand]}
        delimiter: ","             # CSV only (TSV: a tab); encoding: utf-8 (any Python codec name)

``timestamp``, ``rating`` and ``review`` may be omitted; without timestamps, file order is the order.

Reading is row by row, so every row keeps its file line (header included; a CSV row that spans lines is known by
its first line) and one bad row is a counted reject, never the end of the run: a CSV row with the wrong number of
fields (``wrong_field_count``) or broken quoting (``malformed_csv``), a JSON line that does not parse
(``invalid_json``) or is nested too deeply (``too_deeply_nested``). Every value is read as text, whatever type a
JSON line or Parquet column gives it (``readers.text_value``: ids ``12`` and ``"12"`` are the same id; a list in an
attribute column is joined by ``", "``; a list in an id, title or review column is a ``list_value`` reject, an
object a ``nested_value`` reject). Titles, attributes and reviews are normalised by ``render.clean_text``.

Staging row by row costs about 12 µs a row, so ``stage_file`` first tries the fast path (``generic_fast``): DuckDB
and Arrow read the file in bulk and copy each value that row-by-row staging would leave unchanged, and hand every
other row to the same row-by-row code; a file whose bulk reading it cannot vouch for (a CSV row spanning lines, a
parse error, an encoding other than UTF-8, ...) is staged row by row instead. Both give the same staged rows.

DuckDB then applies the validation rules of the other adapters (``readers.make_interaction``) to the staged rows,
out of core: missing ids, invalid or out-of-range ratings, unparseable timestamps, empty titles and oversized fields
are rejected with their line and counted by reason.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from recgpt.data.records import Domain
from recgpt.data.render import clean_text, json_line
from recgpt.data.sources.readers import (
    DATE_FORMATS,
    Limits,
    Options,
    Paths,
    SourceFormatError,
    ValueShapeError,
    check_encoding,
    check_file,
    csv_records,
    domain_from_options,
    read_lines,
    text_value,
)

log = logging.getLogger(__name__)
_SURROGATE = re.compile("[\ud800-\udfff]")

# Stage files by the fast path where it vouches for the result (``generic_fast``); False stages every file row by
# row (tests compare the two).
FAST_PATH = True
DEFAULT_DOMAIN = Domain("generic", "items", 5.0)
ITEM_FIELDS = ("item_id", "title")
EVENT_FIELDS = ("user_id", "item_id", "timestamp", "rating", "review")
TEXT_FIELDS = frozenset({"title", "review"})  # normalised by clean_text; ids and numbers are only stripped
Row = tuple[int, dict[str, Any] | None, str]  # (line, {column: value} or None when unreadable, reason|field)


class _Rejects:
    """A ``RecordSink`` for ``csv_records``: rows it cannot read become staged rows with their reason."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def reject(self, file: Path, line: int, reason: str, field: str = "", excerpt: str = "") -> None:
        del file
        self.rows.append((line, {"__excerpt__": excerpt}, f"{reason}|{field}"))


def file_kind(path: Path) -> str:
    """The type suffix of a generic file (``.csv``, ``.jsonl``, ...; ``.gz`` skipped), failing on others."""
    check_file(path)
    if path.suffix == ".zst":
        raise SourceFormatError(f"{path}: zstd files are not read; decompress it (zstd -d) or gzip it instead")
    suffixes = [s for s in path.suffixes if s != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind not in {".parquet", ".jsonl", ".json", ".ndjson", ".csv", ".tsv", ".txt"}:
        raise SourceFormatError(f"{path}: unknown file type {kind!r}; use .csv, .tsv, .jsonl or .parquet")
    return kind


def _csv_rows(path: Path, options: Options, columns: list[str], kind: str) -> Iterator[Row]:
    delimiter = str(options.get("delimiter", "\t" if kind == ".tsv" else ","))
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise SourceFormatError(f"options.delimiter: one character other than a quote or newline, got {delimiter!r}")
    rejects = _Rejects()
    encoding = check_encoding(options.get("encoding", "utf-8"))
    for line, row in csv_records(path, rejects, encoding=encoding, delimiter=delimiter, required=tuple(columns)):
        yield from rejects.rows
        rejects.rows.clear()
        yield line, row, ""
    yield from rejects.rows


def json_record(text: str) -> tuple[dict[str, Any], str]:
    """A JSON line as a record (numbers kept in their written form), or ``({}, "reason|")`` when unreadable."""
    try:
        record = json.loads(text, parse_int=str, parse_float=str)  # numbers keep their written form
    except RecursionError:
        return {}, "too_deeply_nested|"
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return {}, "invalid_json|"
    return record, ""


def _json_rows(path: Path, options: Options, columns: list[str]) -> Iterator[Row]:
    seen: set[str] = set()
    line = 0
    for line, text in read_lines(path, check_encoding(options.get("encoding", "utf-8"))):
        record, why = json_record(text)
        if why:
            yield line, {"__excerpt__": text[:200]}, why
            continue
        if len(seen) < len(columns):
            seen.update(column for column in columns if column in record)
        yield line, record, ""
    missing = [column for column in columns if column not in seen]
    if missing and line:
        raise SourceFormatError(f"{path}: missing column(s) {missing}; no line has them")


def _parquet_rows(path: Path, columns: list[str]) -> Iterator[Row]:
    try:
        file = pq.ParquetFile(path)
        missing = [column for column in columns if column not in file.schema_arrow.names]
        if missing:
            raise SourceFormatError(f"{path}: missing column(s) {missing}; the file has {file.schema_arrow.names}")
        line = 0
        for batch in file.iter_batches(batch_size=50_000, columns=list(dict.fromkeys(columns))):
            for record in batch.to_pylist():
                line += 1
                yield line, record, ""
    except (pa.ArrowException, OSError) as error:  # not Parquet, truncated, or a corrupt page
        raise SourceFormatError(f"{path}: not a readable Parquet file ({error})") from error


def _rows(path: Path, options: Options, columns: list[str]) -> Iterator[Row]:
    """Every row of a generic file as ``(line, {column: value}, "")``, or ``(line, None-ish, "reason|")``."""
    kind = file_kind(path)
    if kind == ".parquet":
        return _parquet_rows(path, columns)
    if kind in {".csv", ".tsv", ".txt"}:
        return _csv_rows(path, options, columns, kind)
    return _json_rows(path, options, columns)


def _value(field: str, raw: Any, join_lists: bool = False) -> str | None:
    if raw.__class__ is not str:  # most values are strings: no conversion to look for
        raw = text_value(raw, join_lists=join_lists)
        if raw is None:
            return None
    if join_lists or field in TEXT_FIELDS:
        return clean_text(raw)
    text = raw.strip()
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)  # as clean_text does: Parquet cannot hold one


def stage_row(record: dict[str, Any], mapping: dict[str, str], labels: dict[str, str]) -> list[Any]:
    """One row's staged ``[why, excerpt, *field values, attributes]`` (``why`` names a value that is not text).

    Example:
        >>> stage_row({"sku": 12, "name": " Heat\\n(1995) ", "g": ["Crime", ""]}, {"item_id": "sku", "title": "name"},
        ...           {"Genres": "g"})
        [None, None, '12', 'Heat (1995)', '[["Genres", "Crime"]]']
    """
    staged: list[Any] = [None, None]
    for field, column in mapping.items():
        try:
            staged.append(_value(field, record.get(column)))
        except ValueShapeError as error:
            return [f"{error.reason}|{field}", str(record.get(column))[:200]] + [None] * (len(mapping) + 1)
    if not labels:
        return [*staged, "[]"]
    pairs = []
    for label, column in labels.items():
        try:
            value = _value(label, record.get(column), join_lists=True)
        except ValueShapeError as error:
            return [f"{error.reason}|{label}", str(record.get(column))[:200]] + [None] * (len(mapping) + 1)
        if value:
            pairs.append([label, value])
    return [*staged, json.dumps(pairs, ensure_ascii=False)]


def staged_schema(mapping: dict[str, str]) -> pa.Schema:
    """The staged file's columns: ``line``, ``why``, ``excerpt``, one text column per mapped field, ``attributes``."""
    names = ["why", "excerpt", *mapping, "attributes"]
    return pa.schema([("line", pa.int64())] + [(name, pa.string()) for name in names])


def stage_file(
    path: Path,
    options: Options,
    mapping: dict[str, str],
    labels: dict[str, str],
    target: Path,
    connection: Any,
    fast: bool | None = None,
) -> str:
    """Stage ``path`` into ``target`` (``staged_schema``): by the fast path where it can, else row by row.

    The fast path (``generic_fast``) gives exactly the rows of row-by-row staging, or refuses the file; ``fast``
    (default ``FAST_PATH``) False forces row by row.

    Returns:
        ``"fast"`` or ``"rows"``: the path that staged the file.
    """
    file_kind(path)
    if FAST_PATH if fast is None else fast:
        from recgpt.data.sources import generic_fast

        try:
            reader = generic_fast.stage(path, options, mapping, labels, target, connection)
            log.info("%s: staged by the fast path (%s)", path, reader)
            return "fast"
        except generic_fast.Refused as why:
            log.info("%s: staged row by row (the fast path cannot vouch for it: %s)", path, why)
    _stage(path, options, mapping, labels, target)
    return "rows"


def _stage(path: Path, options: Options, mapping: dict[str, str], labels: dict[str, str], target: Path) -> None:
    """Read ``path`` into ``target`` row by row (``staged_schema``)."""
    schema = staged_schema(mapping)
    unreadable = [None] * (len(mapping) + 1)
    columns: list[list[Any]] = [[] for _ in schema.names]
    with pq.ParquetWriter(target, schema) as writer:
        for line, record, why in _rows(path, options, [*mapping.values(), *labels.values()]):
            if why:
                staged = [why, (record or {}).get("__excerpt__"), *unreadable]
            else:
                staged = stage_row(record or {}, mapping, labels)
            columns[0].append(line)
            for column, value in zip(columns[1:], staged, strict=True):
                column.append(value)
            if len(columns[0]) >= 50_000:
                writer.write_table(pa.table(columns, schema=schema))
                columns = [[] for _ in schema.names]
        writer.write_table(pa.table(columns, schema=schema))


def _column_map(options: Options, key: str, fields: tuple[str, ...], required: tuple[str, ...]) -> dict[str, str]:
    mapping = options.get(key) or {}
    if not isinstance(mapping, dict):
        raise SourceFormatError(f"options.{key}: a map of field names to column names, got {mapping!r}")
    missing = [name for name in required if not mapping.get(name)]
    if missing:
        raise SourceFormatError(f"options.{key}: map {missing} to column names")
    unknown = sorted(set(mapping) - set(fields) - {"attributes"})
    if unknown:
        raise SourceFormatError(f"options.{key}: unknown field(s) {unknown}; known: {list(fields)}")
    for field, column in mapping.items():
        if field != "attributes" and not isinstance(column, str):
            raise SourceFormatError(f"options.{key}.{field}: a column name, got {column!r}")
    return {field: mapping[field] for field in fields if mapping.get(field)}


def _attribute_map(options: Options) -> dict[str, str]:
    labels = (options.get("item_columns") or {}).get("attributes") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise SourceFormatError(f"options.item_columns.attributes: a map of labels to column names, got {labels!r}")
    return {clean_text(str(label)): column for label, column in labels.items()}


def _time_sql(unit: str) -> str:
    if unit not in {"s", "ms"}:
        raise SourceFormatError(f"options.timestamp_unit: s or ms, got {unit!r}")
    divisor = 1000.0 if unit == "ms" else 1.0
    formats = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in DATE_FORMATS) + "]"
    parsed_date = f"epoch(try_strptime(replace(raw_time, 'Z', ''), {formats}))"
    return f"coalesce(try_cast(raw_time AS DOUBLE) / {divisor}, {parsed_date})"


def _item_reason(limit: int) -> str:
    return (
        "CASE WHEN why <> '' THEN why WHEN item_id IS NULL OR item_id = '' THEN 'missing_id|item_id' "
        "WHEN title IS NULL OR title = '' THEN 'untitled_item|title' "
        f"WHEN length(title) > {int(limit)} THEN 'field_too_large|title' END"
    )


def _event_reason(limit: int, scale: float, timed: bool) -> str:
    checks = [
        "WHEN why <> '' THEN why",
        "WHEN user_id IS NULL OR user_id = '' THEN 'missing_id|user_id'",
        "WHEN item_id IS NULL OR item_id = '' THEN 'missing_id|item_id'",
        *(["WHEN timestamp IS NULL OR NOT isfinite(timestamp) THEN 'invalid_timestamp|timestamp'"] if timed else []),
        "WHEN raw_rating IS NOT NULL AND (rating IS NULL OR NOT isfinite(rating)) THEN 'invalid_rating|rating'",
        f"WHEN rating < 0 OR rating > {float(scale)} THEN 'rating_out_of_range|rating'",
        f"WHEN length(review) > {int(limit)} THEN 'field_too_large|review'",
    ]
    return "CASE " + " ".join(checks) + " END"


def read_generic_native(
    paths: Paths, folder: Path, options: Options, limits: Limits, connection: Any
) -> tuple[Domain, dict[str, int], Counter[str]]:
    """Write ``items.parquet``, ``interactions.parquet`` and ``rejects.jsonl`` into ``folder``.

    Rows are staged as text (``stage_file``), then validated and written by DuckDB; every value reaches
    SQL as a query parameter or through a staged file, never pasted into the query.

    Returns:
        The domain, ``{"items", "interactions"}`` counts and rejects by reason.
    """
    domain = domain_from_options(options.get("domain"), DEFAULT_DOMAIN)
    icols = _column_map(options, "item_columns", ITEM_FIELDS, ("item_id", "title"))
    ecols = _column_map(options, "interaction_columns", EVENT_FIELDS, ("user_id", "item_id"))
    parsed_time = _time_sql(str(options.get("timestamp_unit", "s"))) if "timestamp" in ecols else "NULL"
    folder.mkdir(parents=True, exist_ok=True)
    stage_file(paths["items"], options, icols, _attribute_map(options), folder / "items_staged.parquet", connection)
    stage_file(paths["interactions"], options, ecols, {}, folder / "interactions_staged.parquet", connection)
    values = {
        "staged_items": str(folder / "items_staged.parquet"),
        "staged_events": str(folder / "interactions_staged.parquet"),
        "items_file": str(paths["items"]),
        "events_file": str(paths["interactions"]),
        "items_out": str(folder / "items.parquet"),
        "events_out": str(folder / "interactions.parquet"),
    }

    def sql(query: str) -> Any:
        return connection.execute(query, {k: v for k, v in values.items() if f"${k}" in query} or None)

    sql(f"""CREATE OR REPLACE TEMP TABLE items_raw AS SELECT *, {_item_reason(limits.max_field_chars)} AS reason
        FROM (SELECT line, coalesce(why, '') AS why, excerpt, item_id, title, attributes
              FROM read_parquet($staged_items))""")
    optional = {name: name if name in ecols else "NULL::VARCHAR" for name in ("timestamp", "rating", "review")}
    reason = _event_reason(limits.max_field_chars, domain.rating_scale, "timestamp" in ecols)
    sql(f"""CREATE OR REPLACE TEMP TABLE events_raw AS SELECT *, {reason} AS reason FROM (
        SELECT *, {parsed_time} AS timestamp, try_cast(raw_rating AS DOUBLE) AS rating FROM (
            SELECT line, coalesce(why, '') AS why, excerpt, user_id, item_id, {optional["timestamp"]} AS raw_time,
                   nullif({optional["rating"]}, '') AS raw_rating, nullif({optional["review"]}, '') AS review
            FROM read_parquet($staged_events)))""")
    # No ORDER BY: with insertion order preserved, rows leave in file order without a sort.
    sql("""COPY (SELECT item_id, title, attributes, $items_file AS file, line FROM items_raw WHERE reason IS NULL)
        TO $items_out (FORMAT parquet)""")
    sql("""COPY (SELECT user_id, item_id, timestamp, rating, review, line AS ord FROM events_raw
        WHERE reason IS NULL) TO $events_out (FORMAT parquet)""")
    rejects = _write_rejects(connection, folder, values)
    counts = {
        "items": sql("SELECT count(*) FROM items_raw WHERE reason IS NULL").fetchall()[0][0],
        "interactions": sql("SELECT count(*) FROM events_raw WHERE reason IS NULL").fetchall()[0][0],
    }
    for table in ("items_raw", "events_raw"):
        sql(f"DROP TABLE {table}")
    for name in ("items_staged.parquet", "interactions_staged.parquet"):
        (folder / name).unlink()
    return domain, counts, rejects


def _write_rejects(connection: Any, folder: Path, values: dict[str, str]) -> Counter[str]:
    """Write the rejected rows of both files to ``rejects.jsonl`` (by file, then line); their counts by reason."""
    query = """
        SELECT * FROM (
            SELECT $items_file AS file, line, reason, coalesce(excerpt, title, item_id, '') AS excerpt
            FROM items_raw WHERE reason IS NOT NULL
            UNION ALL
            SELECT $events_file, line, reason, coalesce(excerpt, raw_time, raw_rating, '') FROM events_raw
            WHERE reason IS NOT NULL)
        ORDER BY file, line"""
    files = {"items_file": values["items_file"], "events_file": values["events_file"]}
    reader = connection.sql(query, params=files).to_arrow_reader(10_000)
    counts: Counter[str] = Counter()
    with (folder / "rejects.jsonl").open("w", encoding="utf-8") as handle:
        for batch in reader:
            for file, line, why, excerpt in zip(*batch.to_pydict().values(), strict=True):
                reason, _, field = why.partition("|")
                counts[reason] += 1
                row = {"source": folder.name, "file": file, "line": line, "reason": reason, "field": field}
                handle.write(json_line({**row, "excerpt": str(excerpt)[:200]}))
    return counts
