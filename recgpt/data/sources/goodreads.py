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

from recgpt.data.records import Domain
from recgpt.data.sources.readers import (
    Limits,
    Options,
    Paths,
    RecordSink,
    json_records,
    make_interaction,
    make_item,
    parse_time,
)

GOODREADS = Domain("goodreads", "books", 5.0, identifying=("Author", "Genres"))


def read_goodreads(paths: Paths, sink: RecordSink, options: Options, limits: Limits) -> Domain:
    """Goodreads: ``paths`` has ``reviews`` (reviews or interactions file) and ``books``; optionally ``authors``
    and ``genres``. Authors and genres are small lookup tables held in memory while books stream."""
    del options
    authors: dict[str, str] = {}
    if "authors" in paths:
        authors = {str(r.get("author_id")): str(r.get("name") or "") for _, r in json_records(paths["authors"], sink)}
    genres: dict[str, str] = {}
    if "genres" in paths:
        for _, record in json_records(paths["genres"], sink):
            counts = record.get("genres") or {}
            if isinstance(counts, dict):
                ranked = sorted(counts, key=lambda name: (-float(counts[name] or 0), name))
                genres[str(record.get("book_id"))] = ", ".join(ranked)
    for line, record in json_records(paths["books"], sink):
        names = [authors.get(str(a.get("author_id")), "") for a in record.get("authors") or [] if isinstance(a, dict)]
        book = str(record.get("book_id"))
        make_item(
            sink,
            paths["books"],
            line,
            record.get("book_id"),
            record.get("title"),
            [("Author", ", ".join(n for n in names if n)), ("Genres", genres.get(book, ""))],
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
