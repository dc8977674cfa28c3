"""Yelp Open Dataset (academic dataset): ``yelp_academic_dataset_review.json`` + ``..._business.json``.

Reviews: ``user_id, business_id, stars, date ("2018-07-07 22:09:11"), text``; businesses: ``business_id, name,
city``. RecGPT writes ``Title, City, Review, Rating``. User and check-in files are not read (no demographics).
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

YELP = Domain("yelp", "businesses", 5.0, identifying=("City",))


def read_yelp(paths: Paths, sink: RecordSink, options: Options, limits: Limits) -> Domain:
    """Yelp: ``paths`` has ``reviews`` and ``business``."""
    del options
    for line, record in json_records(paths["business"], sink):
        make_item(
            sink,
            paths["business"],
            line,
            record.get("business_id"),
            record.get("name"),
            [("City", record.get("city"))],
            limits,
        )
    for line, record in json_records(paths["reviews"], sink):
        make_interaction(
            sink,
            paths["reviews"],
            line,
            YELP,
            user_id=record.get("user_id"),
            item_id=record.get("business_id"),
            timestamp=parse_time(record.get("date")),
            rating=record.get("stars"),
            review=record.get("text"),
            limits=limits,
            rating_required=True,
        )
    return YELP
