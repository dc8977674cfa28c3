"""Anime Recommendations Database (Kaggle, CooperUnion): ``anime.csv`` + ``rating.csv``, no timestamps.

``anime.csv``: ``anime_id, name, genre, type, episodes, rating, members`` (names carry HTML entities such as
``&quot;``); ``rating.csv``: ``user_id, anime_id, rating`` on a 10-point scale, where -1 means watched but not
rated. Order is file order. RecGPT writes ``Title, Genres, Rating`` with ratings ``x.0/10.0``.
"""

from __future__ import annotations

from recgpt.data.records import Domain
from recgpt.data.sources.readers import Limits, Options, Paths, RecordSink, csv_records, make_interaction, make_item

ANIME = Domain("anime", "movies/shows", 10.0, identifying=("Genres",))


def read_anime(paths: Paths, sink: RecordSink, options: Options, limits: Limits) -> Domain:
    """Anime: ``paths`` has ``items`` (anime.csv) and ``ratings`` (rating.csv)."""
    del options
    for line, row in csv_records(paths["items"], sink, required=("anime_id", "name", "genre")):
        make_item(sink, paths["items"], line, row["anime_id"], row["name"], [("Genres", row["genre"])], limits)
    for line, row in csv_records(paths["ratings"], sink, required=("user_id", "anime_id", "rating")):
        rating = None if row["rating"].strip() == "-1" else row["rating"]
        make_interaction(
            sink,
            paths["ratings"],
            line,
            ANIME,
            user_id=row["user_id"],
            item_id=row["anime_id"],
            timestamp=None,
            rating=rating,
            limits=limits,
            timestamp_required=False,
        )
    return ANIME
