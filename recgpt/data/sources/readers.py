"""What every source adapter shares: the record sink, line readers with line numbers, and value parsers.

An adapter reads its dump and hands each item, interaction or rejected row to a ``RecordSink``. Rejected rows
carry the file, line, reason and field, so bad input is counted and reported, never silently lost.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import gzip
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from recgpt.data.records import Domain, Interaction, Item

Paths = Mapping[str, Path]
Options = Mapping[str, Any]

csv.field_size_limit(1 << 30)  # a single huge field is rejected by our own limit, with its line number


class SourceFormatError(ValueError):
    """A dump that cannot be read at all (wrong columns, wrong file): the message names the file and what to fix."""


class RecordSink(Protocol):
    """Where an adapter delivers what it reads."""

    def item(self, item: Item) -> None:
        """Accept a catalogue item."""
        ...

    def interaction(self, event: Interaction) -> None:
        """Accept an interaction."""
        ...

    def reject(self, file: Path, line: int, reason: str, field: str = "", excerpt: str = "") -> None:
        """Record a skipped row: where it was, why, which field, and a short excerpt."""
        ...


@dataclass(frozen=True)
class Limits:
    """Per-field limits that turn pathological rows into rejects.

    Attributes:
        max_field_chars: A title or review longer than this is rejected (reason ``field_too_large``).
    """

    max_field_chars: int = 20_000


def domain_from_options(options: Mapping[str, Any] | None, default: Domain) -> Domain:
    """A ``Domain`` from a source's ``domain:`` option (``name, noun, rating_scale, identifying``) over a default.

    Example:
        >>> domain_from_options({"noun": "podcasts", "identifying": ["Host"]}, Domain("x", "items"))
        Domain(name='x', noun='podcasts', rating_scale=5.0, identifying=('Host',))
    """
    values = {**dataclasses.asdict(default), **dict(options or {})}
    unknown = sorted(set(values) - {"name", "noun", "rating_scale", "identifying"})
    if unknown:
        raise SourceFormatError(f"domain: unknown key(s) {unknown}; known: name, noun, rating_scale, identifying")
    return Domain(str(values["name"]), str(values["noun"]), float(values["rating_scale"]), tuple(values["identifying"]))


def text_lines(path: Path, encoding: str = "utf-8") -> Iterator[str]:
    """The lines of a text file (``*.gz`` unpacked), each decoded on its own so an error names its exact line.

    Line endings are kept, as ``csv.reader`` needs them for quoted fields that span lines.

    Raises:
        FileNotFoundError: If the file does not exist.
        SourceFormatError: For bytes that are not ``encoding`` or a truncated/corrupt archive, naming file and line.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        number = 0
        while True:
            try:
                raw = handle.readline()
            except (EOFError, OSError) as error:  # a truncated or corrupt .gz
                raise SourceFormatError(f"{path}:{number + 1}: the file is truncated or corrupt ({error})") from error
            if not raw:
                return
            number += 1
            try:
                yield raw.decode(encoding)
            except UnicodeDecodeError as error:
                raise SourceFormatError(
                    f"{path}:{number}: not valid {encoding} ({error.reason}); set the source's encoding"
                ) from error


def read_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Non-empty lines without their line endings, with their 1-based numbers (see ``text_lines``)."""
    for number, line in enumerate(text_lines(path, encoding), start=1):
        if line.strip():
            yield number, line.rstrip("\r\n")


def json_records(path: Path, sink: RecordSink, python_literals: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """JSON objects, one per line; invalid lines are rejected (``invalid_json``) and skipped.

    With ``python_literals`` a line may also be a Python dict literal (Amazon 2014 metadata is written that way).
    """
    for number, line in read_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = _literal(line) if python_literals else None
        if not isinstance(record, dict):
            sink.reject(path, number, "invalid_json", "", line[:200])
            continue
        yield number, record


def _literal(line: str) -> Any:
    try:
        return ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def csv_records(
    path: Path,
    sink: RecordSink,
    *,
    encoding: str = "utf-8",
    delimiter: str = ",",
    header: list[str] | None = None,
    required: tuple[str, ...] = (),
    escapechar: str | None = None,
) -> Iterator[tuple[int, dict[str, str]]]:
    """CSV rows as dicts with the line each starts on; rows with the wrong number of fields are rejected.

    Args:
        escapechar: A character escaping quotes inside quoted fields (Book-Crossing writes ``\\"``).
        header: Column names for a file without a header row; None reads the first row as the header.
        required: Columns that must exist; a missing one is an error naming the file and the columns found.
    """
    reader = csv.reader(text_lines(path, encoding), delimiter=delimiter, escapechar=escapechar)
    try:
        names = header if header is not None else next(reader)
    except StopIteration:
        return
    missing = [column for column in required if column not in names]
    if missing:
        raise SourceFormatError(f"{path}: missing column(s) {missing}; the header has {names}")
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            sink.reject(path, start, "malformed_csv", "", str(error)[:200])
            continue
        if not row or row == [""]:
            continue
        if len(row) != len(names):
            sink.reject(path, start, "wrong_field_count", "", delimiter.join(row)[:200])
            continue
        yield start, dict(zip(names, row, strict=True))


def parse_number(raw: Any) -> float | None:
    """A finite float from a number or numeric string, else None (``"nan"``, ``""`` and ``None`` included)."""
    if raw is None or isinstance(raw, bool):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


DATE_FORMATS = (
    "%Y-%m-%d %H:%M:%S",  # Yelp
    "%Y-%m-%dT%H:%M:%S",  # HotelRec
    "%Y-%m-%d",  # Netflix, Food.com
    "%m %d, %Y",  # Amazon reviewTime
    "%a %b %d %H:%M:%S %z %Y",  # Goodreads
)


def parse_time(raw: Any, unit: str = "s") -> float | None:
    """Seconds since the epoch from a number (``unit`` ``s`` or ``ms``) or a date string in a known format.

    Example:
        >>> parse_time(1252800000), parse_time("2009-09-13"), parse_time(1588687728923, "ms")
        (1252800000.0, 1252800000.0, 1588687728.923)
        >>> parse_time("Sun Sep 13 00:00:00 +0000 2009"), parse_time("yesterday")
        (1252800000.0, None)
    """
    number = parse_number(raw)
    if number is not None:
        return number / 1000.0 if unit == "ms" else number
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    for pattern in DATE_FORMATS:
        try:
            parsed = datetime.strptime(text, pattern)
        except ValueError:
            continue
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    return None


_HTML_ENTITY = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);")


def unescape_html(text: str) -> str:
    """Decode HTML entities (``&quot;``, ``&#039;``, ``&amp;``), as found in Anime and BookCrossing titles."""
    import html

    return html.unescape(text) if _HTML_ENTITY.search(text) else text


def make_item(
    sink: RecordSink, path: Path, line: int, item_id: Any, title: Any, attributes: list[tuple[str, Any]], limits: Limits
) -> Item | None:
    """Build and deliver an item, or reject it (``missing_id``, ``untitled_item``, ``field_too_large``)."""
    if item_id is None or str(item_id).strip() == "":
        sink.reject(path, line, "missing_id", "item_id")
        return None
    title_text = unescape_html(str(title)).strip() if title is not None else ""
    if not title_text:
        sink.reject(path, line, "untitled_item", "title", str(item_id))
        return None
    if len(title_text) > limits.max_field_chars:
        sink.reject(path, line, "field_too_large", "title", title_text[:200])
        return None
    cleaned = tuple((label, unescape_html(str(v)).strip()) for label, v in attributes if v not in (None, ""))
    item = Item(str(item_id).strip(), title_text, tuple((k, v) for k, v in cleaned if v))
    sink.item(item)
    return item


def make_interaction(
    sink: RecordSink,
    path: Path,
    line: int,
    domain: Domain,
    *,
    user_id: Any,
    item_id: Any,
    timestamp: float | None,
    rating: Any,
    review: Any = None,
    limits: Limits,
    timestamp_required: bool = True,
    rating_required: bool = False,
    order: int | None = None,
) -> Interaction | None:
    """Validate and deliver an interaction, or reject it with the reason and field.

    ``rating`` may be None (implicit feedback) unless ``rating_required``; a given rating must be a finite number
    in ``[0, domain.rating_scale]``. The interaction's ``order`` (ties keep file order) is the line number unless
    ``order`` gives a position across several files.
    """
    if user_id is None or str(user_id).strip() == "":
        sink.reject(path, line, "missing_id", "user_id")
        return None
    if item_id is None or str(item_id).strip() == "":
        sink.reject(path, line, "missing_id", "item_id")
        return None
    if timestamp is None and timestamp_required:
        sink.reject(path, line, "invalid_timestamp", "timestamp")
        return None
    value = None
    if rating is not None and rating != "":
        value = parse_number(rating)
        if value is None:
            sink.reject(path, line, "invalid_rating", "rating", str(rating)[:50])
            return None
        if not 0.0 <= value <= domain.rating_scale:
            sink.reject(path, line, "rating_out_of_range", "rating", str(rating)[:50])
            return None
    elif rating_required:
        sink.reject(path, line, "invalid_rating", "rating", "")
        return None
    text = str(review).strip() if review not in (None, "") else None
    if text is not None and len(text) > limits.max_field_chars:
        sink.reject(path, line, "field_too_large", "review", text[:200])
        return None
    position = line if order is None else order
    event = Interaction(str(user_id).strip(), str(item_id).strip(), timestamp, value, text or None, order=position)
    sink.interaction(event)
    return event
