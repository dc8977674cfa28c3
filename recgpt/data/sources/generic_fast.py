"""The generic adapter's fast path: DuckDB and Arrow stage a whole file at once, exactly as row by row would.

``generic.stage_file`` tries this first. It reads a file in bulk (CSV/TSV with DuckDB's ``read_csv``; JSON lines
with ``read_json``, its records paired with the file's lines, or where ``read_json`` refuses the file, line by line
with DuckDB's JSON functions; Parquet with Arrow), keeps every value as text, and copies a value straight into the
staged file where row-by-row staging would leave it unchanged: the value is already what ``clean_text`` (titles,
reviews, attributes) or ``str.strip`` (ids, times, ratings) gives. Every other row, and every JSON line whose text
DuckDB might read differently from Python's ``json`` module, is staged by the row-by-row code itself
(``generic.stage_row``, ``generic.json_record``).

It refuses a whole file (``Refused``; the caller then stages it row by row, which also raises or counts what is
wrong) wherever the bulk reader could disagree with the row-by-row one: an encoding other than UTF-8, a gzip file,
NUL bytes, a carriage return that does not end a line, mixed line endings, a CSV quote next to a space at a field
edge or a quoted header, duplicate or missing columns, a CSV row spanning lines or a blank CSV line (the rows
DuckDB returns do not number the file's lines one to one), a Parquet column type other than text, integers,
floats and booleans, and any DuckDB or Arrow reading error.
"""

# pyright: reportAttributeAccessIssue=false
# (pyarrow.compute makes its functions at import, so pyright cannot see them)
from __future__ import annotations

import codecs
import functools
import json
import logging
import re
import unicodedata
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recgpt.data.sources import generic
from recgpt.data.sources.readers import UTF8_THEN_LATIN1, Options, SourceFormatError, check_encoding

BATCH_ROWS = 50_000
SCANNED = 0x40000  # characters from here on always send their row to Python (see _changed_chars)
MAX_LINE_BYTES = 1 << 24
# A JSON line goes to Python when DuckDB's parser may read it differently: a trailing comma, nan/inf spellings
# Python refuses, "-0" (DuckDB writes 0), NUL, control or surrogate escapes.
JSON_SUSPECT = r"(?i),\s*[\]}]|[:,\[]\s*-?(?:nan|inf)|-0(?:[^0-9.eE]|$)|\\u(?:00[01][0-9a-f]|d[89a-f])"
JSON_NUMBER = r"\s*:\s*(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)\s*[,}]"
# JSON kinds whose DuckDB text is what Python's json gives (integers in plain digits; "-0" is in JSON_SUSPECT)
TEXT_KINDS = ("VARCHAR", "BIGINT", "UBIGINT", "BOOLEAN", "NULL")
MAX_BRACKETS = 100  # a line with more [ and { may nest deeper than Python's parser follows: Python decides
_SPACED_PAIRS = (b' "', b'" ', b'\t"', b'"\t')
_LONE_CR = re.compile(rb"\r(?=[^\n])")  # a carriage return at a block's end is judged with the next block


Row = tuple[dict[str, Any], str]  # (record, "" or "reason|" of an unreadable line)
Reader = Callable[[Any], Generator["Chunk", None, None]]  # a DuckDB cursor -> the chunks of one file
log = logging.getLogger(__name__)


class Refused(Exception):
    """The fast path cannot guarantee the row-by-row result for this file; the message says why."""


@dataclass
class Chunk:
    """One batch of a file's rows, as text, before staging.

    Attributes:
        lines: Each row's file line.
        values: Each read column's values as text (``readers.text_value``), not yet stripped or cleaned.
        python: Rows the fast path must not stage itself, or None for none.
        slow: Row ``i`` as the row-by-row reader gives it: ``(record, "")``, ``({"__excerpt__": text}, "reason|")``
            for an unreadable line, or None for a line it skips.
        keep: Rows that are rows at all (blank JSON lines are not), or None for all.
    """

    lines: pa.Array
    values: dict[str, pa.Array]
    python: pa.Array | None
    slow: Callable[[int], Row | None]
    keep: pa.Array | None = None


ASCII_CHANGED = "[\\x{0}-\\x{1f}\\x{7f}]"  # what clean_text may change in ASCII text, but spaces


@functools.cache
def _changed_chars() -> str:
    """An RE2 class of every character ``clean_text`` or ``str.strip`` may change, remove or depend on, but ``" "``.

    Whitespace (``str.isspace``), control (Cc), format (Cf) and surrogate (Cs) characters; every character NFC may
    change (by Python's ``unicodedata``: combining marks, characters NFC replaces, characters that compose with the
    one before, Hangul vowels and final consonants); and everything from ``SCANNED`` on (unassigned planes, tags,
    private use: rare in titles, and not worth the time to list).
    """
    chars = list(map(chr, range(SCANNED)))
    decompositions = list(map(unicodedata.decomposition, chars))
    flags = [c != " " and (c.isspace() or unicodedata.category(c) in {"Cc", "Cf", "Cs"}) for c in chars]
    for code, combining in enumerate(map(unicodedata.combining, chars)):
        flags[code] = flags[code] or combining != 0
    for code, decomposition in enumerate(decompositions):
        if decomposition and not decomposition.startswith("<"):  # canonical: NFC may replace it, or compose into it
            flags[code] = flags[code] or not unicodedata.is_normalized("NFC", chars[code])
            parts = decomposition.split()
            if len(parts) == 2:
                flags[int(parts[1], 16)] = True
    for code in [*range(0x1161, 0x1176), *range(0x11A8, 0x11C3)]:  # Hangul syllables compose without a table
        flags[code] = True
    ranges: list[list[int]] = []
    for code, flagged in enumerate(flags):
        if flagged and ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        elif flagged:
            ranges.append([code, code])
    ranges.append([SCANNED, 0x10FFFF])
    parts = (f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in ranges)
    return "[" + "".join(parts) + "]"


def _changed_class(values: pa.Array) -> str:
    """``ASCII_CHANGED`` for all-ASCII values (no need to build the full class), else ``_changed_chars()``."""
    ascii_only = pc.all(pc.string_is_ascii(values)).as_py() is not False
    return ASCII_CHANGED if ascii_only else _changed_chars()


def _unchanged_by_clean(values: pa.Array) -> pa.Array:
    """True where ``clean_text(value) == value`` is certain (null counts as unchanged)."""
    values = values.cast(pa.string())
    odd = pc.match_substring_regex(values, f"{_changed_class(values)}|  |; |###|^ | $")
    return pc.invert(odd).fill_null(True)


def _unchanged_by_strip(values: pa.Array) -> pa.Array:
    """True where ``value.strip() == value`` is certain (null counts as unchanged)."""
    values = values.cast(pa.string())
    edge = _changed_class(values).replace("[", "[ ", 1)
    return pc.invert(pc.match_substring_regex(values, f"^{edge}|{edge}$")).fill_null(True)


def _attributes(values: dict[str, pa.Array], labels: dict[str, str], size: int) -> pa.Array:
    """``json.dumps([[label, value], ...])`` of the non-empty values, for values ``clean_text`` leaves unchanged."""
    if not labels:
        return pa.array(["[]"] * size, pa.string())
    pieces = []
    for label, column in labels.items():
        text = values[column].cast(pa.string())
        escaped = pc.replace_substring(pc.replace_substring(text, "\\", "\\\\"), '"', '\\"')
        prefix = ", [" + json.dumps(label, ensure_ascii=False) + ', "'
        piece = pc.binary_join_element_wise(prefix, escaped, '"]', "")
        pieces.append(pc.if_else(pc.greater(pc.utf8_length(text), 0), piece, "").fill_null(""))
    joined = pc.utf8_slice_codeunits(pc.binary_join_element_wise(*pieces, ""), 2)  # less the first ", "
    return pc.binary_join_element_wise("[", joined, "]", "")  # (null_handling="skip" loses rows in Arrow 19)


def _staged(row: Row | None, mapping: dict[str, str], labels: dict[str, str]) -> list[Any] | None:
    """``[why, excerpt, *fields, attributes]`` of a row, staged row by row as ``generic.stage_file`` does."""
    if row is None:
        return None
    record, why = row
    if why:
        return [why, record.get("__excerpt__"), *([None] * (len(mapping) + 1))]
    return generic.stage_row(record, mapping, labels)


def stage(
    path: Path, options: Options, mapping: dict[str, str], labels: dict[str, str], target: Path, connection: Any
) -> str:
    """Stage ``path`` into ``target`` as ``generic.stage_file`` does row by row, or raise ``Refused``.

    A JSON lines file is read whole by ``read_json`` (``json_bulk_chunks``), or where that refuses, line by line
    (``json_chunks``).

    Returns:
        The reader that staged it: ``"parquet"``, ``"csv"``, ``"read_json"`` or ``"json lines"``.
    """
    columns = list(dict.fromkeys([*mapping.values(), *labels.values()]))
    kind = generic.file_kind(path)
    if kind == ".parquet":
        readers: list[tuple[str, Reader]] = [("parquet", lambda _: parquet_chunks(path, columns))]
    elif kind in {".csv", ".tsv", ".txt"}:
        readers = [("csv", lambda cursor: csv_chunks(path, options, columns, kind, cursor))]
    else:
        readers = [
            ("read_json", lambda cursor: json_bulk_chunks(path, options, columns, cursor)),
            ("json lines", lambda cursor: json_chunks(path, options, columns, cursor)),
        ]
    for name, read in readers[:-1]:
        try:
            _write(read, mapping, labels, target, connection)
            return name
        except Refused as why:
            log.info("%s: read line by line (%s)", path, why)
    name, read = readers[-1]
    _write(read, mapping, labels, target, connection)
    return name


def _write(read: Reader, mapping: dict[str, str], labels: dict[str, str], target: Path, connection: Any) -> None:
    """Stage the chunks ``read`` gives into ``target``; ``Refused`` for what DuckDB or Arrow cannot read."""
    import duckdb

    cursor = connection.cursor()  # its own result, closed even when a file is refused halfway
    chunks = read(cursor)
    try:
        # The staged file is read once, by the ingest's SQL: uncompressed, and written by a thread (Arrow releases
        # the GIL) while the next chunk is read and staged.
        with (
            pq.ParquetWriter(target, generic.staged_schema(mapping), compression="none") as writer,
            ThreadPoolExecutor(max_workers=1) as writing,
        ):
            pending: Future[None] | None = None
            for chunk in chunks:
                table = stage_chunk(chunk, mapping, labels)
                if pending is not None:
                    pending.result()
                pending = writing.submit(writer.write_table, table)
            if pending is not None:
                pending.result()
    except duckdb.Error as error:  # what it cannot parse, row by row counts or names
        raise Refused(f"DuckDB: {str(error).splitlines()[0]}") from error
    except (pa.ArrowException, UnicodeError) as error:
        raise Refused(f"Arrow: {error}") from error
    finally:
        chunks.close()
        cursor.close()


def stage_chunk(chunk: Chunk, mapping: dict[str, str], labels: dict[str, str]) -> pa.Table:
    """The staged rows of ``chunk``: values copied where staging leaves them unchanged, the rest row by row."""
    size = len(chunk.lines)
    python = chunk.python if chunk.python is not None else pa.array([False] * size)
    for field, column in mapping.items():
        test = _unchanged_by_clean if field in generic.TEXT_FIELDS else _unchanged_by_strip
        python = pc.or_(python, pc.invert(test(chunk.values[column])))
    for column in labels.values():
        python = pc.or_(python, pc.invert(_unchanged_by_clean(chunk.values[column])))
    null = pa.nulls(size, pa.string())
    columns = [null, null, *(chunk.values[c].cast(pa.string()) for c in mapping.values())]
    columns.append(_attributes(chunk.values, labels, size))
    keep = chunk.keep
    rows = [(index, _staged(chunk.slow(index), mapping, labels)) for index in pc.indices_nonzero(python).to_pylist()]
    if rows:
        skipped = {index for index, row in rows if row is None}
        if skipped:
            kept = pa.array([index not in skipped for index in range(size)])
            keep = kept if keep is None else pc.and_(keep, kept)
        for number in range(len(columns)):
            replacements = pa.array([None if row is None else row[number] for _, row in rows], pa.string())
            columns[number] = pc.replace_with_mask(columns[number], python, replacements)
    table = pa.Table.from_arrays([chunk.lines, *columns], schema=generic.staged_schema(mapping))
    return table if keep is None else table.filter(keep)


@dataclass
class _Scan:
    lines: int
    suspect: bool  # NUL, a lone carriage return, or (CSV) a quote beside a space at a field edge


def _scan(path: Path, spaced_quote: re.Pattern[bytes] | None) -> _Scan:
    """Count the lines of ``path`` (as ``readers.text_lines`` splits them) and look for what the fast path refuses."""
    lines, suspect, tail = 0, False, b""
    with path.open("rb") as handle:
        while block := handle.read(1 << 24):
            joined = tail + block  # the tail carries what spans two blocks; the last byte waits for its successor
            lines += block.count(b"\n")
            suspect = suspect or b"\0" in block or _LONE_CR.search(joined) is not None
            quoted = not suspect and b'"' in joined  # one scan rules out every pair
            if spaced_quote is not None and quoted and any(pair in joined for pair in _SPACED_PAIRS):
                suspect = spaced_quote.search(joined) is not None  # the regex only where a pair is: it is slow
            tail = joined[-64:]
    if tail and not tail.endswith(b"\n"):
        lines += 1
        suspect = suspect or tail.endswith(b"\r")
    return _Scan(lines, suspect)


def _check_text_file(path: Path, options: Options) -> None:
    if path.suffix == ".gz":
        raise Refused("gzip files are read row by row")
    try:
        encoding = check_encoding(options.get("encoding", "utf-8"))
    except SourceFormatError:
        raise Refused("unknown encoding (row by row names it)") from None
    if encoding == UTF8_THEN_LATIN1 or codecs.lookup(encoding).name != "utf-8":
        raise Refused(f"encoding {encoding}")


def _csv_header(path: Path, delimiter: str, columns: list[str]) -> list[str]:
    with path.open("rb") as handle:
        first = handle.readline(MAX_LINE_BYTES)
    header = first.decode("utf-8", errors="strict").removeprefix("\ufeff").rstrip("\r\n")
    names = header.split(delimiter)
    if '"' in header or len(names) < 2 or len(set(names)) != len(names):
        raise Refused("a quoted, one-column or duplicate-column header")
    if any(column not in names for column in columns):
        raise Refused("missing columns")
    return names


def csv_chunks(
    path: Path, options: Options, columns: list[str], kind: str, connection: Any
) -> Generator[Chunk, None, None]:
    """The rows of a CSV/TSV file read by DuckDB (every value as text), one line each, in file order."""
    _check_text_file(path, options)
    delimiter = str(options.get("delimiter", "\t" if kind == ".tsv" else ","))
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise Refused("delimiter")
    names = _csv_header(path, delimiter, columns)
    space = "".join(c for c in " \t" if c != delimiter)
    edge = re.escape(delimiter.encode())
    space = re.escape(space.encode())
    spaced = re.compile(rb'(?:^|[%s\n])[%s]+"|"[%s]+(?:[%s\r\n]|$)' % (edge, space, space, edge))
    scan = _scan(path, spaced)
    if scan.suspect or scan.lines < 2:
        raise Refused("NUL, a lone carriage return, a spaced quote, or no data line")
    positions = {name: f"c{index}" for index, name in enumerate(names)}
    picked = ", ".join(f"coalesce({positions[c]}, '') AS {positions[c]}" for c in columns)
    query = f"""SELECT {picked} FROM read_csv($path, header = true, auto_detect = false, columns = $columns,
        delim = $delim, quote = '"', escape = '"', strict_mode = true, null_padding = false, comment = '',
        encoding = 'utf-8', max_line_size = {MAX_LINE_BYTES}, ignore_errors = false)"""
    params = {"path": str(path), "columns": {f"c{i}": "VARCHAR" for i in range(len(names))}, "delim": delimiter}
    reader = connection.sql(query, params=params).to_arrow_reader(BATCH_ROWS)
    line = 2
    for batch in reader:
        values = {column: batch.column(positions[column]) for column in columns}
        yield Chunk(pa.array(range(line, line + batch.num_rows), pa.int64()), values, None, _record_row(values))
        line += batch.num_rows
    if line - 1 != scan.lines:
        raise Refused(f"DuckDB read {line - 2} rows from {scan.lines - 1} lines (a row spans lines, or a blank line)")


def _record_row(values: dict[str, pa.Array]) -> Callable[[int], Row | None]:
    def record(index: int) -> Row | None:
        return {column: array[index].as_py() for column, array in values.items()}, ""

    return record


def _json_paths(columns: list[str]) -> tuple[str, str, dict[str, Any]]:
    """SQL for each column's written float ``d<i>``, SQL true where a column's key is written twice, and their
    parameters.

    Only a column named in plain letters, digits and ``_`` can have its float found in the line: where the line
    holds one ``{`` (no nested object), the key written after ``{`` or ``,`` is that key, never text in a string
    (a quote inside a string follows a backslash), and the number after it is the written form Python keeps.
    """
    params: dict[str, Any] = {"pointers": ["/" + c.replace("~", "~0").replace("/", "~1") for c in columns]}
    parts, twice = [], []
    for index, column in enumerate(columns):
        number = "NULL"
        if re.fullmatch(r"[A-Za-z0-9_]+", column):
            params[f"number{index}"] = '[{,]\\s*"' + column + '"' + JSON_NUMBER
            number = f"nullif(regexp_extract(l, $number{index}, 1), '')"
        parts.append(f"CASE WHEN braces = 1 AND k[{index + 1}] = 'DOUBLE' THEN {number} END AS d{index}")
        params[f"key{index}"] = json.dumps(column, ensure_ascii=False)
        written = len(params[f"key{index}"].encode())  # strlen counts bytes, in constant time
        twice.append(f"strlen(l) - strlen(replace(l, $key{index}, '')) >= {2 * written}")
    return ", ".join(parts) or "NULL AS none", " OR ".join(twice) or "false", params


def json_chunks(path: Path, options: Options, columns: list[str], connection: Any) -> Generator[Chunk, None, None]:
    """The lines of a JSON lines file: DuckDB reads the plain ones (values as text), Python the others.

    A line is plain when DuckDB's parser reads it as an object with distinct keys, nothing in ``JSON_SUSPECT``
    and at most ``MAX_BRACKETS`` brackets, and every column holds a string, an integer, a boolean, null, or a
    float whose written form a regular expression finds in the line: only where the line holds one ``{`` (no
    nested object) and the key is written literally after ``{`` or ``,`` (then it is that key, never text in a
    string, since a quote inside a string follows a backslash).
    """
    _check_text_file(path, options)
    scan = _scan(path, None)
    if scan.suspect or scan.lines == 0:
        raise Refused("NUL, a lone carriage return, or an empty file")
    selected, twice, params = _json_paths(columns)
    kinds = "[" + ", ".join(f"'{kind}'" for kind in TEXT_KINDS) + "]"
    read = " AND ".join(
        f"(k[{i + 1}] IS NULL OR list_contains({kinds}, k[{i + 1}]) OR (k[{i + 1}] = 'DOUBLE' AND d{i} IS NOT NULL))"
        for i in range(len(columns))
    )
    values = ", ".join(
        f"k[{i + 1}] IS NOT NULL AS p{i}, CASE WHEN list_contains({kinds}, k[{i + 1}]) THEN s[{i + 1}] "
        f"WHEN k[{i + 1}] = 'DOUBLE' THEN d{i} END AS v{i}"
        for i in range(len(columns))
    )
    read, values = read or "true", values or "NULL AS none"
    query = f"""
        WITH raw AS (
            SELECT l, l IS NULL OR regexp_full_match(l, '[ \t]*') AS blank FROM read_csv($path, header = false,
                auto_detect = false, columns = {{'l': 'VARCHAR'}}, delim = $delim, quote = '', escape = '',
                strict_mode = true, null_padding = false, comment = '', encoding = 'utf-8',
                max_line_size = {MAX_LINE_BYTES}, ignore_errors = false)),
        counted AS (
            SELECT *, strlen(l) - strlen(replace(l, '{{', '')) AS braces,
                strlen(l) - strlen(replace(l, '[', '')) AS brackets FROM raw),
        valid AS (
            SELECT *, NOT blank AND NOT regexp_matches(l, $suspect) AND starts_with(ltrim(l, $blanks), '{{')
                AND braces + brackets <= {MAX_BRACKETS} AS candidate FROM counted),
        typed AS (  -- try: NULL for a line DuckDB cannot parse
            SELECT *, CASE WHEN candidate THEN try(json_type(l, $pointers)) END AS k FROM valid),
        texts AS (
            SELECT *, k IS NOT NULL AS ok, CASE WHEN k IS NOT NULL THEN json_extract_string(l, $pointers) END AS s
            FROM typed),
        keyed AS (
            SELECT *, CASE WHEN NOT ok THEN false WHEN NOT contains(l, '\\') THEN NOT ({twice})
                ELSE len(json_keys(l)) = len(list_distinct(json_keys(l))) END AS plain FROM texts),
        numbered AS (SELECT *, {selected} FROM keyed),
        judged AS (SELECT *, plain AND {read} AS fast FROM numbered)
        SELECT blank, fast, {values}, CASE WHEN NOT fast AND NOT blank THEN l END AS l FROM judged"""
    params.update({"path": str(path), "delim": "\x01", "suspect": JSON_SUSPECT, "blanks": " \t"})
    yield from _json_batches(connection.sql(query, params=params).to_arrow_reader(BATCH_ROWS), columns, scan)


def json_bulk_chunks(path: Path, options: Options, columns: list[str], connection: Any) -> Generator[Chunk, None, None]:
    """The lines of a JSON lines file with no blank line: DuckDB's ``read_json`` reads the values, Python the
    lines it cannot vouch for (``JSON_SUSPECT``, not an object, over ``MAX_BRACKETS`` brackets, a list or object in
    a column, a float whose written form is not found; see ``_json_paths``).

    ``read_json`` fails on what Python may read (a duplicate key, deep nesting, one bad line): ``Refused``, and
    ``json_chunks`` reads the file. Its records are paired with the file's lines by position, which holds only
    when every line is one record: it skips blank lines, so a file with one is refused, as is one where the two
    readers' counts differ.
    """
    _check_text_file(path, options)
    scan = _scan(path, None)
    if scan.suspect or scan.lines == 0:
        raise Refused("NUL, a lone carriage return, or an empty file")
    names = [f"j{index}" for index in range(len(columns))]
    params: dict[str, Any] = {"json": {column: "JSON" for column in columns}}
    values = []
    for index, name in enumerate(names):
        number = "NULL"
        if re.fullmatch(r"[A-Za-z0-9_]+", columns[index]):
            params[f"number{index}"] = '[{,]\\s*"' + columns[index] + '"' + JSON_NUMBER
            number = (
                f"CASE WHEN strlen(l) - strlen(replace(l, '{{', '')) = 1 "
                f"THEN nullif(regexp_extract(l, $number{index}, 1), '') END"
            )
        values.append(
            f"{name} IS NOT NULL AS p{index}, CASE WHEN left({name}, 1) = '\"' THEN CASE WHEN contains({name}, '\\') "
            f"THEN {name}::JSON ->> '$' ELSE {name}[2:-2] END WHEN {name} IN ('true', 'false') "
            f"OR regexp_full_match({name}, '-?[0-9]+') THEN {name} WHEN left({name}, 1) NOT IN ('[', '{{') "
            f"THEN {number} END AS v{index}"
        )
    read = " AND ".join(f"(j{i} IS NULL OR v{i} IS NOT NULL)" for i in range(len(columns))) or "true"
    texts = ", ".join(f"CAST(j{i} AS VARCHAR) AS j{i}" for i in range(len(columns))) or "NULL AS none"
    query = f"""
        WITH joined AS (
            SELECT present_line, present_record, l, {texts} FROM (
                SELECT true AS present_line, l FROM read_csv($path, header = false, auto_detect = false,
                    columns = {{'l': 'VARCHAR'}}, delim = $delim, quote = '', escape = '', strict_mode = true,
                    null_padding = false, comment = '', encoding = 'utf-8', max_line_size = {MAX_LINE_BYTES},
                    ignore_errors = false))
            POSITIONAL JOIN (
                SELECT true AS present_record, * FROM read_json($path, format = 'newline_delimited', records = true,
                    columns = $json, maximum_object_size = {MAX_LINE_BYTES}) AS t({", ".join(names) or "none"}))),
        valued AS (
            SELECT *, present_line IS NULL OR present_record IS NULL OR l IS NULL
                OR regexp_full_match(l, '\\s*') AS blank, {", ".join(values) or "NULL AS none"} FROM joined),
        judged AS (
            SELECT *, NOT blank AND NOT regexp_matches(l, $suspect) AND starts_with(ltrim(l, $blanks), '{{')
                AND strlen(l) - strlen(replace(replace(l, '[', ''), '{{', '')) <= {MAX_BRACKETS} AND {read} AS fast
            FROM valued)
        SELECT blank, fast, {", ".join(f"p{i}, v{i}" for i in range(len(columns))) or "NULL AS none"},
            CASE WHEN NOT fast AND NOT blank THEN l END AS l FROM judged"""
    params.update({"path": str(path), "delim": "\x01", "suspect": JSON_SUSPECT, "blanks": " \t"})
    reader = connection.sql(query, params=params).to_arrow_reader(BATCH_ROWS)
    yield from _json_batches(reader, columns, scan, blank_refuses=True)


def _json_batches(
    reader: Any, columns: list[str], scan: _Scan, blank_refuses: bool = False
) -> Generator[Chunk, None, None]:
    """Chunks of the query's batches; ``Refused`` when its rows do not number the lines one to one, or when a
    column is in no line (staging row by row then names it).

    A value is read by DuckDB where its kind is in ``TEXT_KINDS``, or a float whose written form was found
    (``d<i>``); a line with any other value (a list, an object, a float not found) is not ``fast``: Python reads
    it (the query gives its text). The columns
    seen in lines staged row by row are added by ``Chunk.slow``, which ``stage_chunk`` calls before the next
    chunk is asked for: by the end, ``seen`` holds every line's columns.
    """
    seen: set[str] = set()
    line, nonblank = 1, False
    for batch in reader:
        fast = batch.column("fast").fill_null(False)
        values = {column: batch.column(f"v{index}") for index, column in enumerate(columns)}
        for index, column in enumerate(columns):
            if column not in seen and pc.any(pc.and_(fast, batch.column(f"p{index}"))).as_py():
                seen.add(column)
        blank = batch.column("blank")
        if blank_refuses and pc.any(blank).as_py():
            raise Refused("a blank line, or a line read_json does not see: records and lines do not pair")
        nonblank = nonblank or not pc.all(blank).as_py()
        python = pc.and_(pc.invert(fast), pc.invert(blank))
        lines = pa.array(range(line, line + batch.num_rows), pa.int64())
        slow = _json_line(batch.column("l"), _record_row(values), columns, seen)
        yield Chunk(lines, values, python, slow, pc.invert(blank))
        line += batch.num_rows
    if line - 1 != scan.lines:
        raise Refused(f"DuckDB read {line - 1} lines of {scan.lines}")
    if nonblank and any(column not in seen for column in columns):
        raise Refused("a column no line has (row by row names it)")


def _json_line(
    texts: pa.Array, plain: Callable[[int], Row | None], columns: list[str], seen: set[str]
) -> Callable[[int], Row | None]:
    """Row ``i`` as ``generic`` reads it: by Python's ``json`` where DuckDB's reading is not vouched for (the query
    gives such a line's text), else from DuckDB's values (``plain``: the values ``text_value`` gives); None for a
    line ``read_lines`` skips."""

    def row(index: int) -> Row | None:
        text = texts[index].as_py()
        if text is None:
            return plain(index)
        if not text.strip():
            return None
        record, why = generic.json_record(text)
        if why:
            return {"__excerpt__": text[:200]}, why
        seen.update(column for column in columns if column in record)
        return record, ""

    return row


def parquet_chunks(path: Path, columns: list[str]) -> Generator[Chunk, None, None]:
    """The rows of a Parquet file, each column as text the way ``readers.text_value`` writes it."""
    try:
        file = pq.ParquetFile(path)
        schema = file.schema_arrow
    except (pa.ArrowException, OSError) as error:
        raise Refused(f"unreadable ({error})") from error
    if any(column not in schema.names for column in columns) or len(set(schema.names)) != len(schema.names):
        raise Refused("missing or duplicate columns")
    for column in columns:
        kind = schema.field(column).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if not (_is_text(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_null(kind)
                or pa.types.is_float32(kind) or pa.types.is_float64(kind)):  # fmt: skip
            raise Refused(f"column {column!r} is {kind}")
    line = 1
    try:
        for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=list(dict.fromkeys(columns))):
            values = {column: _parquet_text(batch.column(column)) for column in columns}
            yield Chunk(pa.array(range(line, line + batch.num_rows), pa.int64()), values, None, _record_row(values))
            line += batch.num_rows
    except (pa.ArrowException, OSError) as error:
        raise Refused(f"unreadable ({error})") from error


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def _parquet_text(values: pa.Array) -> pa.Array:
    """``text_value`` of each value: text as is, integers in decimal, ``true``/``false``, floats as ``str``."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    kind = values.type
    if pa.types.is_boolean(kind):
        return pc.if_else(values, "true", "false")
    if pa.types.is_floating(kind):  # Python's shortest repr: only Python writes it exactly
        return pa.array([None if v is None else str(v) for v in values.to_pylist()], pa.string())
    return values.cast(pa.string())
