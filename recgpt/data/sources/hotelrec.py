"""HotelRec (Antognini & Faltings, LREC 2020): one JSON object per line in ``HotelRec.txt``.

Keys: ``hotel_url, author, date ("2010-01-01T00:00:00"), rating, title, text, property_dict``. The hotel has no
separate table: its id, name and place come from the TripAdvisor URL
``Hotel_Review-g<geo>-d<hotel>-Reviews-<Hotel_Name>-<City_Region>.html``. RecGPT writes
``Title, City, Review, Rating``.
"""

from __future__ import annotations

import re

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

HOTELREC = Domain("hotelrec", "hotels", 5.0, identifying=("City",))
_URL = re.compile(r"Hotel_Review-g\d+-(d\d+)-Reviews-(.+)-([^-]+)\.html$")


def parse_hotel_url(url: str) -> tuple[str, str, str] | None:
    """``(hotel_id, name, city)`` from a TripAdvisor hotel URL, or None.

    Example:
        >>> parse_hotel_url("Hotel_Review-g194863-d1095143-Reviews-Hotel_Baia_Bianca-Ventimiglia_Liguria.html")
        ('d1095143', 'Hotel Baia Bianca', 'Ventimiglia Liguria')
    """
    match = _URL.search(url or "")
    if match is None:
        return None
    hotel, name, city = match.groups()
    return hotel, name.replace("_", " "), city.replace("_", " ")


def read_hotelrec(paths: Paths, sink: RecordSink, options: Options, limits: Limits) -> Domain:
    """HotelRec: ``paths`` has ``reviews`` (HotelRec.txt)."""
    del options
    seen: set[str] = set()
    for line, record in json_records(paths["reviews"], sink):
        parsed = parse_hotel_url(str(record.get("hotel_url", "")))
        if parsed is None:
            sink.reject(paths["reviews"], line, "invalid_hotel_url", "hotel_url", str(record.get("hotel_url"))[:200])
            continue
        hotel, name, city = parsed
        if hotel not in seen:
            seen.add(hotel)
            make_item(sink, paths["reviews"], line, hotel, name, [("City", city)], limits)
        make_interaction(
            sink,
            paths["reviews"],
            line,
            HOTELREC,
            user_id=record.get("author"),
            item_id=hotel,
            timestamp=parse_time(record.get("date")),
            rating=record.get("rating"),
            review=record.get("text"),
            limits=limits,
            rating_required=True,
        )
    return HOTELREC
