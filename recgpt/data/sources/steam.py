"""Steam, the 200K-row Kaggle dump ``steam-200k.csv`` (Tamber): no header, no timestamps.

Rows: ``user_id, game title, behaviour ("purchase" | "play"), value (1.0 or hours), 0``. Games have no id, so
the title is the id. Order is file order. RecGPT writes ``Title`` only.
"""

from __future__ import annotations

from recgpt.data.records import Domain
from recgpt.data.sources.readers import Limits, Options, Paths, RecordSink, csv_records, make_interaction, make_item

STEAM = Domain("steam", "video games", 5.0)
COLUMNS = ["user_id", "game", "behavior", "value", "zero"]


def read_steam(paths: Paths, sink: RecordSink, options: Options, limits: Limits) -> Domain:
    """Steam: ``paths`` has ``interactions``; ``options.behaviors`` (default ``["purchase"]``) selects rows."""
    behaviors = set(options.get("behaviors", ["purchase"]))
    seen: set[str] = set()
    for line, row in csv_records(paths["interactions"], sink, header=COLUMNS):
        if row["behavior"] not in behaviors:
            continue
        title = row["game"].strip()
        if title and title not in seen:
            seen.add(title)
            make_item(sink, paths["interactions"], line, title, title, [], limits)
        make_interaction(
            sink,
            paths["interactions"],
            line,
            STEAM,
            user_id=row["user_id"],
            item_id=title,
            timestamp=None,
            rating=None,
            limits=limits,
            timestamp_required=False,
        )
    return STEAM
