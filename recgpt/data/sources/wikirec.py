"""WikiRec: Wikipedia editors' article histories with article descriptions (RecGPT's ``Wikipedia articles``).

The layout read here is two tab-separated files with headers: ``edits.tsv`` (``user_id, page_id, timestamp``
in seconds or ISO 8601) and ``articles.tsv`` (``page_id, title, description``). RecGPT's exact WikiRec dump
could not be checked offline when this adapter was written; for another layout, use the ``generic`` format with
a column map. RecGPT writes ``Title, Description``.
"""

from __future__ import annotations

from recgpt.data.records import Domain
from recgpt.data.sources.readers import (
    Limits,
    Options,
    Paths,
    RecordSink,
    csv_records,
    make_interaction,
    make_item,
    parse_time,
)

WIKIREC = Domain("wikirec", "Wikipedia articles", 5.0)


def read_wikirec(paths: Paths, sink: RecordSink, options: Options, limits: Limits) -> Domain:
    """WikiRec: ``paths`` has ``edits`` and ``articles``."""
    del options
    for line, row in csv_records(paths["articles"], sink, delimiter="\t", required=("page_id", "title")):
        make_item(
            sink,
            paths["articles"],
            line,
            row["page_id"],
            row["title"],
            [("Description", row.get("description", ""))],
            limits,
        )
    for line, row in csv_records(paths["edits"], sink, delimiter="\t", required=("user_id", "page_id", "timestamp")):
        make_interaction(
            sink,
            paths["edits"],
            line,
            WIKIREC,
            user_id=row["user_id"],
            item_id=row["page_id"],
            timestamp=parse_time(row["timestamp"].replace("Z", "")),
            rating=None,
            limits=limits,
        )
    return WIKIREC
