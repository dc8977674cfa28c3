"""Netflix Prize: ``combined_data_1..4.txt`` (or ``training_set/mv_*.txt``) + ``movie_titles.csv``.

Ratings come in blocks: a line ``<MovieID>:`` then ``<CustomerID>,<Rating>,<YYYY-MM-DD>`` lines.
``movie_titles.csv`` is Latin-1 ``MovieID,YearOfRelease,Title`` with unquoted commas inside titles and ``NULL``
years. Titles get the year suffix MovieLens uses, ``Title (2003)``, so remakes stay distinct. RecGPT writes
``Title, Rating``.
"""

from __future__ import annotations

from recgpt.data.records import Domain
from recgpt.data.sources.readers import (
    UTF8_THEN_LATIN1,
    Limits,
    Options,
    Paths,
    RecordSink,
    make_interaction,
    make_item,
    parse_time,
    read_lines,
)

NETFLIX = Domain("netflix", "movies/shows", 5.0)


def read_netflix(paths: Paths, sink: RecordSink, options: Options, limits: Limits) -> Domain:
    """Netflix: ``paths`` has ``titles`` and ``ratings`` (a file, or a folder of ``combined_data_*.txt``)."""
    del options
    for line, text in read_lines(paths["titles"], UTF8_THEN_LATIN1):
        parts = text.split(",", 2)
        if len(parts) != 3:
            sink.reject(paths["titles"], line, "wrong_field_count", "", text[:200])
            continue
        movie, year, title = parts
        name = f"{title.strip()} ({year})" if year.strip().isdigit() else title
        make_item(sink, paths["titles"], line, movie, name, [], limits)
    ratings = paths["ratings"]
    files = sorted(ratings.glob("combined_data_*.txt")) if ratings.is_dir() else [ratings]
    for index, path in enumerate(files):
        movie = None
        for line, text in read_lines(path, "latin-1"):
            if text.endswith(":"):
                movie = text[:-1].strip()
                continue
            parts = text.split(",")
            if movie is None or len(parts) != 3:
                sink.reject(path, line, "wrong_field_count" if movie else "rating_before_movie_id", "", text[:200])
                continue
            make_interaction(
                sink,
                path,
                line,
                NETFLIX,
                user_id=parts[0],
                item_id=movie,
                timestamp=parse_time(parts[2]),
                rating=parts[1],
                limits=limits,
                rating_required=True,
                order=(index << 40) + line,
            )
    return NETFLIX
