"""Source adapters: each reads one published dump format into canonical ``Item`` and ``Interaction`` records.

``ADAPTERS`` maps a ``format`` name (the ``sources[].format`` of a data config) to its reader, the files it needs
(``sources[].paths`` keys) and where the dump is published.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recgpt.data.records import Domain
from recgpt.data.sources.readers import Limits, RecordSink, SourceFormatError

Reader = Callable[[Mapping[str, Path], RecordSink, Mapping[str, Any], Limits], Domain]


@dataclass(frozen=True)
class Adapter:
    """A source format.

    Attributes:
        reader: ``"module:function"`` under ``recgpt.data.sources``, imported when used.
        files: Required ``paths`` keys.
        optional_files: Optional ``paths`` keys.
        options: Accepted ``options`` keys.
        origin: Where the dump is published, and its license or terms.
        native: The reader runs in DuckDB and writes the ingest folder itself
            (``reader(paths, folder, options, limits, connection) -> (domain, counts, rejects)``) instead of
            delivering records to a sink.
    """

    reader: str
    files: tuple[str, ...]
    optional_files: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    origin: str = ""
    native: bool = False

    def load(self) -> Reader:
        """Import the reader function."""
        module, function = self.reader.split(":")
        return getattr(importlib.import_module(f"recgpt.data.sources.{module}"), function)

    def check(self, name: str, paths: Mapping[str, Any], options: Mapping[str, Any]) -> None:
        """Fail on missing or unknown ``paths`` keys and unknown ``options`` keys, naming them."""
        missing = [key for key in self.files if key not in paths]
        unknown = sorted(set(paths) - set(self.files) - set(self.optional_files))
        if missing or unknown:
            raise SourceFormatError(
                f"source '{name}': paths needs {list(self.files)} (optional {list(self.optional_files)}); "
                f"missing {missing}, unknown {unknown}"
            )
        extra = sorted(set(options) - set(self.options))
        if extra:
            raise SourceFormatError(f"source '{name}': unknown option(s) {extra}; known: {list(self.options)}")


AMAZON_OPTIONS = ("category",)
ADAPTERS: dict[str, Adapter] = {
    "amazon2014": Adapter(
        "amazon:read_amazon2014",
        ("reviews", "meta"),
        options=AMAZON_OPTIONS,
        origin="https://jmcauley.ucsd.edu/data/amazon/ (research use)",
    ),
    "amazon2018": Adapter(
        "amazon:read_amazon2018",
        ("reviews", "meta"),
        options=AMAZON_OPTIONS,
        origin="https://nijianmo.github.io/amazon/ (research use)",
    ),
    "amazon2023": Adapter(
        "amazon:read_amazon2023",
        ("reviews", "meta"),
        options=AMAZON_OPTIONS,
        origin="https://amazon-reviews-2023.github.io/ (research use)",
    ),
    "yelp": Adapter(
        "yelp:read_yelp", ("reviews", "business"), origin="https://www.yelp.com/dataset (Yelp Dataset Terms of Use)"
    ),
    "movielens-100k": Adapter(
        "movielens:read_movielens_100k",
        ("ratings", "items"),
        ("genres",),
        origin="https://grouplens.org/datasets/movielens/ (no redistribution)",
    ),
    "movielens-1m": Adapter(
        "movielens:read_movielens_1m",
        ("ratings", "items"),
        origin="https://grouplens.org/datasets/movielens/ (no redistribution)",
    ),
    "movielens-latest": Adapter(
        "movielens:read_movielens_latest",
        ("ratings", "items"),
        origin="https://grouplens.org/datasets/movielens/ (no redistribution)",
    ),
    "goodreads": Adapter(
        "goodreads:read_goodreads",
        ("reviews", "books"),
        ("authors", "genres"),
        origin="https://mengtingwan.github.io/data/goodreads (academic use)",
    ),
    "steam": Adapter(
        "steam:read_steam",
        ("interactions",),
        options=("behaviors",),
        origin="https://www.kaggle.com/datasets/tamber/steam-video-games (Kaggle terms)",
    ),
    "anime": Adapter(
        "anime:read_anime",
        ("items", "ratings"),
        origin="https://www.kaggle.com/datasets/CooperUnion/anime-recommendations-database (CC0)",
    ),
    "bookcrossing": Adapter(
        "bookcrossing:read_bookcrossing",
        ("books", "ratings"),
        options=("encoding",),
        origin="http://www2.informatik.uni-freiburg.de/~cziegler/BX/ (research use)",
    ),
    "food": Adapter(
        "food:read_food",
        ("recipes", "interactions"),
        origin="https://www.kaggle.com/datasets/shuyangli94/food-com-recipes-and-user-interactions",
    ),
    "hotelrec": Adapter(
        "hotelrec:read_hotelrec", ("reviews",), origin="https://github.com/Diego999/HotelRec (research use)"
    ),
    "netflix": Adapter(
        "netflix:read_netflix",
        ("titles", "ratings"),
        origin="https://www.kaggle.com/datasets/netflix-inc/netflix-prize-data (Netflix Prize terms)",
    ),
    "wikirec": Adapter("wikirec:read_wikirec", ("edits", "articles")),
    "recbole": Adapter(
        "recbole:read_recbole",
        ("interactions", "items"),
        options=("title_field", "year_field", "attributes", "domain"),
        origin="https://github.com/RUCAIBox/RecSysDatasets (each dataset's own terms)",
    ),
    "generic": Adapter(
        "generic:read_generic_native",
        ("interactions", "items"),
        options=("interaction_columns", "item_columns", "timestamp_unit", "domain", "delimiter", "encoding"),
        native=True,
    ),
}


def adapter(name: str) -> Adapter:
    """The adapter of a ``format`` name.

    Raises:
        SourceFormatError: For an unknown name, listing the known ones.
    """
    if name not in ADAPTERS:
        raise SourceFormatError(f"unknown source format {name!r}; known: {sorted(ADAPTERS)}")
    return ADAPTERS[name]
