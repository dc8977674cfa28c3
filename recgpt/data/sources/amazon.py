"""Amazon product reviews: the 2014, 2018 and 2023 releases of the UCSD / McAuley-lab dumps.

- 2014 (He & McAuley): ``reviews_<Category>[_5].json.gz`` and ``meta_<Category>.json.gz``. Metadata lines are
  Python dict literals (single quotes), not JSON; review lines are JSON in most files and literals in some.
  Keys: ``reviewerID, asin, overall, unixReviewTime, reviewText``; metadata ``asin, title, brand``.
- 2018 (Ni et al.): ``<Category>.json.gz`` and ``meta_<Category>.json.gz``, JSON lines with the same review keys;
  metadata ``asin, title, brand`` (titles may hold HTML entities).
- 2023 (Hou et al.): ``<Category>.jsonl(.gz)`` and ``meta_<Category>.jsonl(.gz)``: reviews ``user_id,
  parent_asin, rating, timestamp`` (milliseconds) ``, text``; metadata ``parent_asin, title, store``.

RecGPT writes Amazon items as ``Title, Brand`` (``Title, Author`` for Books, where the scraped brand field holds
the author), then ``Review, Rating``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

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

PRODUCTS = Domain("amazon", "products", 5.0, identifying=("Brand",))
BOOKS = Domain("amazon-books", "books", 5.0, identifying=("Author",))


def _domain(options: Mapping[str, Any]) -> Domain:
    return BOOKS if str(options.get("category", "")).lower() == "books" else PRODUCTS


def _read(
    paths: Mapping[str, Path], sink: RecordSink, options: Mapping[str, Any], limits: Limits, *, release: int
) -> Domain:
    domain = _domain(options)
    label = domain.identifying[0]
    item_key = "parent_asin" if release == 2023 else "asin"
    brand_key = "store" if release == 2023 else "brand"
    for line, record in json_records(paths["meta"], sink, python_literals=release == 2014):
        brand = record.get(brand_key)
        if release == 2023 and domain is BOOKS and isinstance(record.get("author"), dict):
            brand = record["author"].get("name") or brand
        make_item(sink, paths["meta"], line, record.get(item_key), record.get("title"), [(label, brand)], limits)
    for line, record in json_records(paths["reviews"], sink, python_literals=release == 2014):
        if release == 2023:
            user, item, rating = record.get("user_id"), record.get("parent_asin"), record.get("rating")
            timestamp, review = parse_time(record.get("timestamp"), "ms"), record.get("text")
        else:
            user, item, rating = record.get("reviewerID"), record.get("asin"), record.get("overall")
            timestamp = parse_time(record.get("unixReviewTime"))
            if timestamp is None:
                timestamp = parse_time(record.get("reviewTime"))
            review = record.get("reviewText")
        make_interaction(
            sink,
            paths["reviews"],
            line,
            domain,
            user_id=user,
            item_id=item,
            timestamp=timestamp,
            rating=rating,
            review=review,
            limits=limits,
            rating_required=True,
        )
    return domain


def read_amazon2014(paths: Paths, sink: RecordSink, options: Options, limits: Limits) -> Domain:
    """Amazon 2014: ``paths`` has ``reviews`` and ``meta``; ``options.category: books`` selects the Books wording."""
    return _read(paths, sink, options, limits, release=2014)


def read_amazon2018(paths: Paths, sink: RecordSink, options: Options, limits: Limits) -> Domain:
    """Amazon 2018: ``paths`` has ``reviews`` and ``meta``; ``options.category: books`` selects the Books wording."""
    return _read(paths, sink, options, limits, release=2018)


def read_amazon2023(paths: Paths, sink: RecordSink, options: Options, limits: Limits) -> Domain:
    """Amazon 2023: ``paths`` has ``reviews`` and ``meta``; items are keyed by ``parent_asin``."""
    return _read(paths, sink, options, limits, release=2023)
