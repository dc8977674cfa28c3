"""Goodreads (UCSD Book Graph, Wan & McAuley): reviews or interactions, with books, authors and genres.

- ``goodreads_reviews_*.json.gz``: ``user_id, book_id, rating, review_text, date_added``
  (``"Sun Jul 30 07:44:10 -0700 2017"``), or ``goodreads_interactions_*.json.gz``: the same keys with
  ``review_text_incomplete``, where rating 0 means "shelved, not rated".
- ``goodreads_books*.json.gz``: ``book_id, title, authors: [{author_id, role}]``.
- ``goodreads_book_authors.json.gz``: ``author_id, name``; ``goodreads_book_genres_initial.json.gz``:
  ``book_id, genres: {"fiction": count, ...}``.

RecGPT writes ``Title, Author, Genres, Review, Rating``.
"""

from __future__ import annotations

import json
from pathlib import Path

from recgpt.data.records import Domain
from recgpt.data.sources.readers import (
    Limits,
    Options,
    Paths,
    RecordSink,
    ValueShapeError,
    json_records,
    make_interaction,
    make_item,
    parse_number,
    parse_time,
    text_value,
)

GOODREADS = Domain("goodreads", "books", 5.0, identifying=("Author", "Genres"))


def _authors(path: Path, sink: RecordSink) -> dict[str, str]:
    """``author_id -> name`` from the authors file; a name that is not text is rejected with its line."""
    names: dict[str, str] = {}
    for line, record in json_records(path, sink):
        try:
            names[str(record.get("author_id"))] = text_value(record.get("name"), join_lists=True) or ""
        except ValueShapeError as error:
            sink.reject(path, line, error.reason, "name", str(record.get("name"))[:200])
    return names


def _genres(path: Path, sink: RecordSink) -> dict[str, str]:
    """``book_id -> "genre, genre"`` (most votes first) from the genres file; bad counts are rejected."""
    genres: dict[str, str] = {}
    for line, record in json_records(path, sink):
        counts = record.get("genres") or {}
        votes = (
            {str(name): parse_number(count or 0) for name, count in counts.items()} if isinstance(counts, dict) else {}
        )
        if not isinstance(counts, dict) or None in votes.values():
            sink.reject(path, line, "invalid_genres", "genres", json.dumps(counts, ensure_ascii=False)[:200])
            continue
        ranked = sorted(votes, key=lambda name: (-(votes[name] or 0.0), name))
        genres[str(record.get("book_id"))] = ", ".join(ranked)
    return genres


def read_goodreads(paths: Paths, sink: RecordSink, options: Options, limits: Limits) -> Domain:
    """Goodreads: ``paths`` has ``reviews`` (reviews or interactions file) and ``books``; optionally ``authors``
    and ``genres``. Authors and genres are small lookup tables held in memory while books stream."""
    del options
    authors = _authors(paths["authors"], sink) if "authors" in paths else {}
    genres = _genres(paths["genres"], sink) if "genres" in paths else {}
    for line, record in json_records(paths["books"], sink):
        listed = record.get("authors") or []
        names = [authors.get(str(a.get("author_id")), "") for a in listed if isinstance(a, dict)]
        if not isinstance(listed, list) or len(names) != len(listed):
            sink.reject(paths["books"], line, "invalid_authors", "authors", str(listed)[:200])
            continue
        book = record.get("book_id")
        genre = genres.get(str(book), "")
        make_item(
            sink,
            paths["books"],
            line,
            book,
            record.get("title"),
            [("Author", ", ".join(n for n in names if n)), ("Genres", genre)],
            limits,
        )
    for line, record in json_records(paths["reviews"], sink):
        rating = record.get("rating")
        rating = None if rating in (0, "0") else rating  # 0: shelved without a rating
        review = record.get("review_text", record.get("review_text_incomplete"))
        make_interaction(
            sink,
            paths["reviews"],
            line,
            GOODREADS,
            user_id=record.get("user_id"),
            item_id=record.get("book_id"),
            timestamp=parse_time(record.get("date_added")),
            rating=rating,
            review=review,
            limits=limits,
        )
    return GOODREADS
