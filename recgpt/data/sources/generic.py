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

``timestamp``, ``rating`` and ``review`` may be omitted; without timestamps, file order is the order.

These files are read by DuckDB itself (multi-threaded, out of core), not row by row in Python, with the same
validation rules as the other adapters (``readers.make_interaction``): missing ids, invalid or out-of-range
ratings, unparseable timestamps, empty titles and oversized fields are rejected with their row number (the file
line for CSV without multi-line fields; header included) and counted by reason.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from recgpt.data.records import Domain
from recgpt.data.sources.readers import DATE_FORMATS, Limits, Options, Paths, SourceFormatError, domain_from_options

DEFAULT_DOMAIN = Domain("generic", "items", 5.0)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _reader(path: Path, options: Options) -> tuple[str, int]:
    """The DuckDB table function reading ``path`` (by suffix) and the row number of its first data line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    suffixes = [s for s in path.suffixes if s not in {".gz", ".zst"}]
    kind = suffixes[-1] if suffixes else ""
    name = _literal(str(path))
    if kind == ".parquet":
        return f"read_parquet({name})", 1
    if kind in {".jsonl", ".json", ".ndjson"}:
        return f"read_json({name}, format='newline_delimited', records=true, maximum_object_size=16777216)", 1
    if kind in {".csv", ".tsv", ".txt"}:
        delimiter = options.get("delimiter", "\t" if kind == ".tsv" else ",")
        encoding = options.get("encoding", "utf-8")
        return (
            f"read_csv({name}, header=true, all_varchar=true, delim={_literal(delimiter)}, quote='\"', "
            f"escape='\"', encoding={_literal(encoding)}, max_line_size=16777216, null_padding=false)"
        ), 2
    raise SourceFormatError(f"{path}: unknown file type {kind!r}; use .csv, .tsv, .jsonl or .parquet")


def _columns(connection: Any, relation: str, path: Path, mapped: list[str]) -> None:
    names = [row[0] for row in connection.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]
    missing = [column for column in mapped if column not in names]
    if missing:
        raise SourceFormatError(f"{path}: mapped column(s) {missing} not in the file; it has {names}")


def _column_map(options: Options, key: str, required: tuple[str, ...]) -> dict[str, Any]:
    mapping = dict(options.get(key) or {})
    missing = [name for name in required if not mapping.get(name)]
    if missing:
        raise SourceFormatError(f"options.{key}: map {missing} to column names")
    return mapping


def _text(column: str | None) -> str:
    return f"nullif(trim(CAST({_quote(column)} AS VARCHAR)), '')" if column else "NULL"


def read_generic_native(
    paths: Paths, folder: Path, options: Options, limits: Limits, connection: Any
) -> tuple[Domain, dict[str, int], Counter[str]]:
    """Write ``items.parquet``, ``interactions.parquet`` and ``rejects.jsonl`` into ``folder`` with DuckDB.

    Returns:
        The domain, ``{"items", "interactions"}`` counts and rejects by reason.
    """
    domain = domain_from_options(options.get("domain"), DEFAULT_DOMAIN)
    icols = _column_map(options, "item_columns", ("item_id", "title"))
    ecols = _column_map(options, "interaction_columns", ("user_id", "item_id"))
    attributes: dict[str, str] = dict(icols.get("attributes") or {})
    folder.mkdir(parents=True, exist_ok=True)
    sql = connection.execute
    limit = int(limits.max_field_chars)

    items, first = _reader(paths["items"], options)
    _columns(connection, items, paths["items"], [icols["item_id"], icols["title"], *attributes.values()])
    pairs = ", ".join(f"[{_literal(label)}, {_text(column)}]" for label, column in attributes.items())
    sql(f"""CREATE OR REPLACE TEMP TABLE items_raw AS
        SELECT row_number() OVER () + {first - 1} AS line, {_text(icols["item_id"])} AS item_id,
               {_text(icols["title"])} AS title,
               to_json(list_filter([{pairs}], lambda pair: pair[2] IS NOT NULL)) AS attributes
        FROM {items}""")
    item_reason = (
        f"CASE WHEN item_id IS NULL THEN 'missing_id|item_id' WHEN title IS NULL THEN 'untitled_item|title' "
        f"WHEN length(title) > {limit} THEN 'field_too_large|title' END"
    )

    events, first = _reader(paths["interactions"], options)
    mapped = [ecols[k] for k in ("user_id", "item_id", "timestamp", "rating", "review") if ecols.get(k)]
    _columns(connection, events, paths["interactions"], mapped)
    unit = 1000.0 if options.get("timestamp_unit", "s") == "ms" else 1.0
    raw_time = _text(ecols.get("timestamp"))
    formats = "[" + ", ".join(_literal(f) for f in DATE_FORMATS) + "]"
    parsed_time = (
        (
            f"coalesce(try_cast({raw_time} AS DOUBLE) / {unit}, "
            f"epoch(try_strptime(replace({raw_time}, 'Z', ''), {formats})))"
        )
        if ecols.get("timestamp")
        else "NULL"
    )
    sql(f"""CREATE OR REPLACE TEMP TABLE events_raw AS
        SELECT row_number() OVER () + {first - 1} AS line, {_text(ecols["user_id"])} AS user_id,
               {_text(ecols["item_id"])} AS item_id, {raw_time} AS raw_time, {parsed_time} AS timestamp,
               {_text(ecols.get("rating"))} AS raw_rating, try_cast({_text(ecols.get("rating"))} AS DOUBLE) AS rating,
               {_text(ecols.get("review"))} AS review
        FROM {events}""")
    checks = [
        "WHEN user_id IS NULL THEN 'missing_id|user_id'",
        "WHEN item_id IS NULL THEN 'missing_id|item_id'",
        *(
            ["WHEN timestamp IS NULL OR NOT isfinite(timestamp) THEN 'invalid_timestamp|timestamp'"]
            if ecols.get("timestamp")
            else []
        ),
        "WHEN raw_rating IS NOT NULL AND (rating IS NULL OR NOT isfinite(rating)) THEN 'invalid_rating|rating'",
        f"WHEN rating < 0 OR rating > {float(domain.rating_scale)} THEN 'rating_out_of_range|rating'",
        f"WHEN length(review) > {limit} THEN 'field_too_large|review'",
    ]
    event_reason = "CASE " + " ".join(checks) + " END"
    # No ORDER BY: with insertion order preserved, rows leave in file order without a sort.
    sql(f"""COPY (SELECT item_id, title, attributes FROM items_raw WHERE ({item_reason}) IS NULL)
        TO {_literal(str(folder / "items.parquet"))} (FORMAT parquet)""")
    target = _literal(str(folder / "interactions.parquet"))
    sql(f"""COPY (SELECT user_id, item_id, timestamp, rating, review, line AS ord FROM events_raw
        WHERE ({event_reason}) IS NULL) TO {target} (FORMAT parquet)""")
    rejected = []
    for role, table, reason in (("items", "items_raw", item_reason), ("interactions", "events_raw", event_reason)):
        excerpt = "coalesce(title, item_id, '')" if table == "items_raw" else "coalesce(raw_time, raw_rating, '')"
        rejected.append(f"""SELECT {_literal(folder.name)} AS source, {_literal(str(paths[role]))} AS file, line,
            split_part(why, '|', 1) AS reason, split_part(why, '|', 2) AS field, left({excerpt}, 200) AS excerpt
            FROM (SELECT *, {reason} AS why FROM {table}) WHERE why IS NOT NULL""")
    sql(f"CREATE OR REPLACE TEMP TABLE rejected AS {' UNION ALL '.join(rejected)}")
    sql(f"COPY (SELECT * FROM rejected ORDER BY file, line) TO {_literal(str(folder / 'rejects.jsonl'))} (FORMAT json)")
    rejects = Counter(dict(sql("SELECT reason, count(*) FROM rejected GROUP BY reason").fetchall()))
    counts = {
        "items": sql(f"SELECT count(*) FROM read_parquet({_literal(str(folder / 'items.parquet'))})").fetchall()[0][0],
        "interactions": sql(
            f"SELECT count(*) FROM read_parquet({_literal(str(folder / 'interactions.parquet'))})"
        ).fetchall()[0][0],
    }
    for table in ("items_raw", "events_raw", "rejected"):
        sql(f"DROP TABLE {table}")
    return domain, counts, rejects
