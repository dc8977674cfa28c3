"""What every source adapter shares: the record sink, line readers with line numbers, and value parsers.

An adapter reads its dump and hands each item, interaction or rejected row to a ``RecordSink``. Rejected rows
carry the file, line, reason and field, so bad input is counted and reported, never silently lost.
"""

from __future__ import annotations

import ast
import codecs
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
from recgpt.data.render import clean_text

Paths = Mapping[str, Path]
Options = Mapping[str, Any]

csv.field_size_limit(1 << 30)  # a single huge field is rejected by our own limit, with its line number

# Each line is decoded as UTF-8, and a line that is not UTF-8 as Latin-1: the Latin-1 dumps (MovieLens 100K/1M,
# Book-Crossing, Netflix titles) hold some UTF-8 lines, which Latin-1 alone would turn into mojibake.
UTF8_THEN_LATIN1 = "utf-8, then latin-1"


class SourceFormatError(ValueError):
    """A dump that cannot be read at all (wrong columns, wrong file): the message names the file and what to fix."""


class RejectSink(Protocol):
    """Where a row reader reports the rows it cannot read."""

    def reject(self, file: Path, line: int, reason: str, field: str = "", excerpt: str = "") -> None:
        """Record a skipped row: where it was, why, which field, and a short excerpt."""
        ...


class RecordSink(RejectSink, Protocol):
    """Where an adapter delivers what it reads."""

    def item(self, item: Item, file: Path | None = None, line: int = 0) -> None:
        """Accept a catalogue item read from ``line`` of ``file`` (where a duplicate id is reported)."""
        ...

    def interaction(self, event: Interaction) -> None:
        """Accept an interaction."""
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
    if options is not None and not isinstance(options, Mapping):
        raise SourceFormatError(f"options.domain: a map of name, noun, rating_scale, identifying; got {options!r}")
    values = {**dataclasses.asdict(default), **dict(options or {})}
    unknown = sorted(set(values) - {"name", "noun", "rating_scale", "identifying"})
    if unknown:
        raise SourceFormatError(f"domain: unknown key(s) {unknown}; known: name, noun, rating_scale, identifying")
    scale = parse_number(values["rating_scale"])
    if scale is None or scale <= 0:
        raise SourceFormatError(f"options.domain.rating_scale: a number > 0, got {values['rating_scale']!r}")
    identifying = values["identifying"]
    if isinstance(identifying, str) or not all(isinstance(label, str) for label in identifying or ()):
        raise SourceFormatError(f"options.domain.identifying: a list of attribute labels, got {identifying!r}")
    # The noun is written into every header line: normalised like any field, so it cannot break a line
    return Domain(str(values["name"]), clean_text(str(values["noun"])), scale, tuple(identifying or ()))


def check_encoding(encoding: str, key: str = "options.encoding") -> str:
    """``encoding`` if Python knows it (or it is ``UTF8_THEN_LATIN1``), else an error naming ``key``."""
    if encoding == UTF8_THEN_LATIN1:
        return encoding
    try:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", str(encoding)):
            raise LookupError(encoding)
        codecs.lookup(str(encoding))
    except LookupError:
        raise SourceFormatError(f"{key}: unknown encoding {encoding!r}; use e.g. utf-8, latin-1, cp1252") from None
    return str(encoding)


def check_file(path: Path) -> None:
    """Fail unless ``path`` is a file, saying whether it is missing or a folder."""
    if path.is_dir():
        raise SourceFormatError(f"{path}: is a folder; give the path of the file itself")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")


def _decode(raw: bytes, encoding: str) -> str:
    if encoding != UTF8_THEN_LATIN1:
        return raw.decode(encoding)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def text_lines(path: Path, encoding: str = "utf-8") -> Iterator[str]:
    """The lines of a text file (``*.gz`` unpacked), each decoded on its own so an error names its exact line.

    Line endings are kept, as ``csv.reader`` needs them for quoted fields that span lines. ``encoding`` may be
    ``UTF8_THEN_LATIN1``: each line is read as UTF-8, or as Latin-1 when it is not UTF-8.

    Raises:
        FileNotFoundError: If the file does not exist.
        SourceFormatError: For a folder, bytes that are not ``encoding`` or a truncated/corrupt archive, naming
            file and line.
    """
    check_file(path)
    check_encoding(encoding)
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
                text = _decode(raw, encoding)
                yield text.removeprefix("\ufeff") if number == 1 else text  # a byte order mark is not data
            except UnicodeDecodeError as error:
                raise SourceFormatError(
                    f"{path}:{number}: not valid {encoding} ({error.reason}); set the source's encoding"
                ) from error


def read_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Non-empty lines without their line endings, with their 1-based numbers (see ``text_lines``)."""
    for number, line in enumerate(text_lines(path, encoding), start=1):
        if line.strip():
            yield number, line.rstrip("\r\n")


def json_records(path: Path, sink: RejectSink, python_literals: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """JSON objects, one per line; other lines are rejected (``invalid_json``, or ``too_deeply_nested`` for
    nesting Python's parser cannot follow) and skipped.

    With ``python_literals`` a line may also be a Python dict literal (Amazon 2014 metadata is written that way).
    """
    for number, line in read_lines(path):
        reason = "invalid_json"
        try:
            record = json.loads(line)
        except RecursionError:
            record, reason = None, "too_deeply_nested"
        except ValueError:  # JSONDecodeError, and integers longer than Python's digit limit
            record = _literal(line) if python_literals else None
        if not isinstance(record, dict):
            sink.reject(path, number, reason, "", line[:200])
            continue
        yield number, record


def _literal(line: str) -> Any:
    try:
        return ast.literal_eval(line)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def csv_records(
    path: Path,
    sink: RejectSink,
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


class ValueShapeError(ValueError):
    """A list or object where text was expected; ``reason`` is the reject reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_SCALARS = (str, int, float)


def text_value(value: Any, *, join_lists: bool = False) -> str | None:
    """The one rule, for every adapter, turning a source value into text (not yet ``clean_text``-ed).

    ``None`` stays None; a string is itself; ``true``/``false`` are written so; a number is ``str(number)``. A list
    of scalars is, for attribute fields (``join_lists``), its non-empty values joined by ``", "``, the way RecGPT
    writes genres; elsewhere (ids, titles, reviews) it is rejected as ``list_value``, since no one reading of a
    list title or review is right. Objects, and lists that hold lists or objects, are rejected as ``nested_value``.

    Example:
        >>> text_value(12), text_value(["Reno", "Sparks"], join_lists=True), text_value(True)
        ('12', 'Reno, Sparks', 'true')
        >>> text_value(["A title"])
        Traceback (most recent call last):
        recgpt.data.sources.readers.ValueShapeError: list_value
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple) and all(part is None or isinstance(part, _SCALARS) for part in value):
        if not join_lists:
            raise ValueShapeError("list_value")
        parts = (clean_text(text_value(part) or "") for part in value)  # nulls and empty values are left out
        return ", ".join(part for part in parts if part)
    raise ValueShapeError("nested_value")


def _texts(sink: RecordSink, path: Path, line: int, fields: list[tuple[str, Any, bool]]) -> list[str | None] | None:
    """``text_value`` of each ``(field, value, join_lists)``, or None after rejecting the row at the first bad one."""
    texts = []
    for name, value, join_lists in fields:
        try:
            texts.append(text_value(value, join_lists=join_lists))
        except ValueShapeError as error:
            sink.reject(path, line, error.reason, name, json.dumps(value, ensure_ascii=False, default=str)[:200])
            return None
    return texts


def make_item(
    sink: RecordSink, path: Path, line: int, item_id: Any, title: Any, attributes: list[tuple[str, Any]], limits: Limits
) -> Item | None:
    """Build and deliver an item, or reject it (``missing_id``, ``untitled_item``, ``field_too_large``, and
    ``text_value``'s ``list_value`` / ``nested_value``).

    The title and attributes are HTML-unescaped and normalised by ``render.clean_text``, so what is stored is what
    every line writes; attribute lists are joined (``text_value``).
    """
    fields = [("item_id", item_id, False), ("title", title, False)]
    texts = _texts(sink, path, line, fields + [(label, value, True) for label, value in attributes])
    if texts is None:
        return None
    identifier, title_raw, *values = texts
    if identifier is None or identifier.strip() == "":
        sink.reject(path, line, "missing_id", "item_id")
        return None
    title_text = clean_text(unescape_html(title_raw)) if title_raw is not None else ""
    if not title_text:
        sink.reject(path, line, "untitled_item", "title", identifier.strip()[:200])
        return None
    if len(title_text) > limits.max_field_chars:
        sink.reject(path, line, "field_too_large", "title", title_text[:200])
        return None
    cleaned = ((label, clean_text(unescape_html(v))) for (label, _), v in zip(attributes, values, strict=True) if v)
    item = Item(identifier.strip(), title_text, tuple((k, v) for k, v in cleaned if v))
    sink.item(item, path, line)
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
    in ``[0, domain.rating_scale]``. The review is normalised by ``render.clean_text``. The interaction's
    ``order`` (ties keep file order) is the line number unless ``order`` gives a position across several files.
    """
    fields = [("user_id", user_id, False), ("item_id", item_id, False), ("review", review, False)]
    texts = _texts(sink, path, line, fields)
    if texts is None:
        return None
    user, item, review_raw = (text.strip() if text is not None else "" for text in texts)
    for name, value in (("user_id", user), ("item_id", item)):
        if not value:
            sink.reject(path, line, "missing_id", name)
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
    text = clean_text(review_raw) if review_raw else ""
    if len(text) > limits.max_field_chars:
        sink.reject(path, line, "field_too_large", "review", text[:200])
        return None
    position = line if order is None else order
    event = Interaction(user, item, timestamp, value, text or None, order=position)
    sink.interaction(event)
    return event
