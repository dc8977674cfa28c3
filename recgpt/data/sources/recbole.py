"""RecBole atomic files (``.inter`` / ``.item`` with ``name:type`` headers), e.g. RecBole's MovieLens-100K.

RecBole ships MovieLens-100K converted to atomic files inside its wheel (``recbole/dataset_example/ml-100k``),
which is how the demo and the tests get real data with no network. MovieLens may not be redistributed, so the
files are read from the installed package and never copied into this repository.
"""

from __future__ import annotations

import importlib.util
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

from recgpt.data.records import Domain, Interaction, Item, SourceData

# Titles RecBole and MovieLens use for a movie whose title is unknown (RecBole's ml-100k spells it "unkonwn").
_PLACEHOLDER_TITLES = {"", "unknown", "unkonwn"}


def packaged_movielens_100k() -> Path:
    """The folder of MovieLens-100K atomic files inside the installed ``recbole`` wheel (not imported).

    Raises:
        FileNotFoundError: If recbole is not installed; ``make demo`` installs it with ``pip install --no-deps``.
    """
    spec = importlib.util.find_spec("recbole")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location) / "dataset_example" / "ml-100k"
        if (folder / "ml-100k.inter").is_file():
            return folder
    raise FileNotFoundError(
        "MovieLens-100K was not found: install the file-only copy that RecBole ships with "
        "`pip install --no-deps recbole==1.2.1` (make demo does this), or set the source path to your own copy"
    )


def read_atomic(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a RecBole atomic file as ``(line_number, {field_name: raw_value})``, header types stripped.

    Rows whose column count differs from the header are yielded with the key ``"__malformed__"`` so the caller
    can count them.

    Example::

        user_id:token\\titem_id:token\\trating:float      (header)
        196\\t242\\t3                                       -> (2, {"user_id": "196", "item_id": "242", "rating": "3"})
    """
    with path.open(encoding="utf-8", newline="") as handle:
        header = handle.readline().rstrip("\r\n").split("\t")
        names = [column.split(":", 1)[0] for column in header]
        for line_number, line in enumerate(handle, start=2):
            values = line.rstrip("\r\n").split("\t")
            if len(values) != len(names):
                yield line_number, {"__malformed__": line}
                continue
            yield line_number, dict(zip(names, values, strict=True))


def load_recbole(
    folder: Path,
    dataset: str,
    domain: Domain,
    title_field: str = "movie_title",
    year_field: str | None = "release_year",
    attribute_fields: Mapping[str, str] | None = None,
) -> SourceData:
    """Read ``{folder}/{dataset}.item`` and ``{dataset}.inter`` into canonical records.

    The defaults fit RecBole's MovieLens files: the title is ``movie_title (release_year)`` (MovieLens's own
    title form) and ``class`` becomes ``Genres``, its space-separated tokens joined by ", ".

    Args:
        folder: The folder holding the atomic files.
        dataset: The files' stem, e.g. ``"ml-100k"``.
        domain: How histories of this source are worded.
        title_field: The ``.item`` column holding the title.
        year_field: A column appended to the title in parentheses, or None.
        attribute_fields: Item line fields to show after the title, as ``{label: column}``; token sequences are
            joined by ", ". Defaults to ``{"Genres": "class"}``.
    """
    attribute_fields = {"Genres": "class"} if attribute_fields is None else attribute_fields
    rejects: Counter[str] = Counter()
    items = _read_items(folder / f"{dataset}.item", title_field, year_field, attribute_fields, rejects)
    interactions: list[Interaction] = []
    rows_read = 0
    for line_number, row in read_atomic(folder / f"{dataset}.inter"):
        rows_read += 1
        event = _to_interaction(row, line_number, domain, items, rejects)
        if event is not None:
            interactions.append(event)
    return SourceData(domain, items, interactions, rejects, rows_read)


def _read_items(
    path: Path, title_field: str, year_field: str | None, attribute_fields: Mapping[str, str], rejects: Counter[str]
) -> dict[str, Item]:
    items: dict[str, Item] = {}
    for line_number, row in read_atomic(path):
        if "__malformed__" in row:
            rejects["malformed_item_row"] += 1
            continue
        missing = [name for name in ("item_id", title_field, *attribute_fields.values()) if name not in row]
        if missing:
            raise ValueError(f"{path}:{line_number}: missing item column(s) {missing}; the header has {list(row)}")
        title = row[title_field].strip()
        if title.lower() in _PLACEHOLDER_TITLES:
            rejects["untitled_item"] += 1
            continue
        year = row.get(year_field, "").strip() if year_field else ""
        if year.isdigit():
            title = f"{title} ({year})"
        attributes = tuple(
            (label, ", ".join(token for token in row[column].split() if token.lower() != "unknown"))
            for label, column in attribute_fields.items()
        )
        items[row["item_id"]] = Item(row["item_id"], title, attributes)
    return items


def _to_interaction(
    row: dict[str, str], line_number: int, domain: Domain, items: Mapping[str, Item], rejects: Counter[str]
) -> Interaction | None:
    if "__malformed__" in row:
        rejects["malformed_row"] += 1
        return None
    if row.get("item_id") not in items:
        rejects["unknown_or_untitled_item"] += 1
        return None
    rating = _number(row.get("rating"))
    if rating is not None and not 0.0 <= rating <= domain.rating_scale:
        rejects["rating_out_of_range"] += 1
        return None
    if "rating" in row and rating is None:
        rejects["invalid_rating"] += 1
        return None
    timestamp = _number(row.get("timestamp"))
    if "timestamp" in row and timestamp is None:
        rejects["invalid_timestamp"] += 1
        return None
    return Interaction(row["user_id"], row["item_id"], timestamp, rating, None, order=line_number)


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
