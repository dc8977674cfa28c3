"""Book-Crossing (Ziegler et al. 2005): ``BX-Books.csv`` + ``BX-Book-Ratings.csv``, no timestamps.

Semicolon-separated, every field quoted, Latin-1 with some UTF-8 lines (each line is read as UTF-8 first).
Books: ``ISBN, Book-Title, Book-Author, Year-Of-Publication, Publisher, Image-URL-S/M/L`` (a few rows hold
stray ``\\"`` quotes and split wrongly: they are rejected with
their line). Ratings: ``User-ID, ISBN, Book-Rating`` on 0-10, where 0 is an implicit interaction. The users file
(age, location) is not read. RecGPT writes ``Title, Author, Rating`` with ratings ``x.0/10.0``.
"""

from __future__ import annotations

from recgpt.data.records import Domain
from recgpt.data.sources.readers import (
    UTF8_THEN_LATIN1,
    Limits,
    Options,
    Paths,
    RecordSink,
    check_encoding,
    csv_records,
    make_interaction,
    make_item,
)

BOOKCROSSING = Domain("bookcrossing", "books", 10.0, identifying=("Author",))


def read_bookcrossing(paths: Paths, sink: RecordSink, options: Options, limits: Limits) -> Domain:
    """Book-Crossing: ``paths`` has ``books`` and ``ratings``.

    ``options.encoding`` defaults to ``UTF8_THEN_LATIN1``: each line as UTF-8, else as Latin-1.
    """
    encoding = check_encoding(options.get("encoding", UTF8_THEN_LATIN1))
    for line, row in csv_records(
        paths["books"],
        sink,
        encoding=encoding,
        delimiter=";",
        escapechar="\\",
        required=("ISBN", "Book-Title", "Book-Author"),
    ):
        make_item(sink, paths["books"], line, row["ISBN"], row["Book-Title"], [("Author", row["Book-Author"])], limits)
    for line, row in csv_records(
        paths["ratings"],
        sink,
        encoding=encoding,
        delimiter=";",
        escapechar="\\",
        required=("User-ID", "ISBN", "Book-Rating"),
    ):
        rating = None if row["Book-Rating"].strip() == "0" else row["Book-Rating"]
        make_interaction(
            sink,
            paths["ratings"],
            line,
            BOOKCROSSING,
            user_id=row["User-ID"],
            item_id=row["ISBN"],
            timestamp=None,
            rating=rating,
            limits=limits,
            timestamp_required=False,
        )
    return BOOKCROSSING
