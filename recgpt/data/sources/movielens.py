"""MovieLens in its three published layouts (GroupLens), each with its own separators and encoding.

- ``ml-100k``: ``u.data`` (tab: user, item, rating, timestamp) and ``u.item`` (``|``-separated, Latin-1 with
  some UTF-8 lines, each read as UTF-8 first: id, title, release date, video date, IMDb URL, then 19 genre
  flags named in ``u.genre``).
- ``ml-1m``: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) and ``movies.dat``
  (``MovieID::Title::Genres``, genres ``|``-separated, Latin-1, each line read as UTF-8 first).
- ``ml-latest`` / ``ml-latest-small`` / ``ml-25m``: ``ratings.csv`` (``userId,movieId,rating,timestamp``, half
  stars) and ``movies.csv`` (``movieId,title,genres``, UTF-8, quoted titles with commas).

Titles keep MovieLens's year suffix (``Toy Story (1995)``). RecGPT writes ``Title, Genres, Rating``.
"""

from __future__ import annotations

from pathlib import Path

from recgpt.data.records import MOVIELENS, Domain
from recgpt.data.sources.readers import (
    UTF8_THEN_LATIN1,
    Limits,
    Options,
    Paths,
    RecordSink,
    csv_records,
    make_interaction,
    make_item,
    parse_time,
    read_lines,
)

ML_100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def _genres(names: list[str]) -> str:
    return ", ".join(name for name in names if name and name not in {"unknown", "(no genres listed)"})


def _ratings(path: Path, sink: RecordSink, separator: str, limits: Limits, header: bool = False) -> None:
    for line, text in read_lines(path):
        if header and line == 1:
            continue
        parts = text.split(separator)
        if len(parts) != 4:
            sink.reject(path, line, "wrong_field_count", "", text[:200])
            continue
        user, item, rating, timestamp = parts
        make_interaction(
            sink,
            path,
            line,
            MOVIELENS,
            user_id=user,
            item_id=item,
            timestamp=parse_time(timestamp),
            rating=rating,
            limits=limits,
            rating_required=True,
        )


def read_movielens_100k(paths: Paths, sink: RecordSink, options: Options, limits: Limits) -> Domain:
    """ML-100K: ``paths`` has ``ratings`` (u.data) and ``items`` (u.item), optionally ``genres`` (u.genre)."""
    del options
    names = ML_100K_GENRES
    if "genres" in paths:
        names = [text.split("|")[0] for _, text in read_lines(paths["genres"], UTF8_THEN_LATIN1)]
    for line, text in read_lines(paths["items"], UTF8_THEN_LATIN1):
        parts = text.split("|")
        if len(parts) != 5 + len(names):
            sink.reject(paths["items"], line, "wrong_field_count", "", text[:200])
            continue
        flags = parts[5:]
        title = "" if parts[1].strip().lower() == "unknown" else parts[1]
        genres = _genres([name for name, flag in zip(names, flags, strict=True) if flag == "1"])
        make_item(sink, paths["items"], line, parts[0], title, [("Genres", genres)], limits)
    _ratings(paths["ratings"], sink, "\t", limits)
    return MOVIELENS


def read_movielens_1m(paths: Paths, sink: RecordSink, options: Options, limits: Limits) -> Domain:
    """ML-1M: ``paths`` has ``ratings`` (ratings.dat) and ``items`` (movies.dat)."""
    del options
    for line, text in read_lines(paths["items"], UTF8_THEN_LATIN1):
        parts = text.split("::")
        if len(parts) != 3:
            sink.reject(paths["items"], line, "wrong_field_count", "", text[:200])
            continue
        make_item(sink, paths["items"], line, parts[0], parts[1], [("Genres", _genres(parts[2].split("|")))], limits)
    _ratings(paths["ratings"], sink, "::", limits)
    return MOVIELENS


def read_movielens_latest(paths: Paths, sink: RecordSink, options: Options, limits: Limits) -> Domain:
    """ML-latest (and ml-25m, ml-32m): ``paths`` has ``ratings`` (ratings.csv) and ``items`` (movies.csv)."""
    del options
    for line, row in csv_records(paths["items"], sink, required=("movieId", "title", "genres")):
        make_item(
            sink,
            paths["items"],
            line,
            row["movieId"],
            row["title"],
            [("Genres", _genres(row["genres"].split("|")))],
            limits,
        )
    for line, row in csv_records(paths["ratings"], sink, required=("userId", "movieId", "rating", "timestamp")):
        make_interaction(
            sink,
            paths["ratings"],
            line,
            MOVIELENS,
            user_id=row["userId"],
            item_id=row["movieId"],
            timestamp=parse_time(row["timestamp"]),
            rating=row["rating"],
            limits=limits,
            rating_required=True,
        )
    return MOVIELENS
