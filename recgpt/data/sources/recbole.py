"""RecBole atomic files (``.inter`` / ``.item`` with ``name:type`` headers), e.g. RecBole's MovieLens-100K.

RecBole converts dozens of public datasets to this layout, so this adapter opens all of them. RecBole's wheel
also ships MovieLens-100K converted (``recbole/dataset_example/ml-100k``), which is how the demo and the tests
get real data with no network. MovieLens may not be redistributed, so the files are read from the installed
package and never copied into this repository.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping
from pathlib import Path

from recgpt.data.records import MOVIELENS, Domain
from recgpt.data.sources.readers import (
    Limits,
    Options,
    Paths,
    RecordSink,
    SourceFormatError,
    domain_from_options,
    make_interaction,
    make_item,
    parse_time,
    text_lines,
)

# Titles RecBole and MovieLens use for a movie whose title is unknown (RecBole's ml-100k spells it "unkonwn").
_PLACEHOLDER_TITLES = {"", "unknown", "unkonwn"}


def packaged_movielens_100k() -> Path:
    """The folder of MovieLens-100K atomic files inside the installed ``recbole`` wheel (not imported).

    Raises:
        FileNotFoundError: If recbole is not installed; ``make`` installs it with ``pip install --no-deps``.
    """
    spec = importlib.util.find_spec("recbole")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location) / "dataset_example" / "ml-100k"
        if (folder / "ml-100k.inter").is_file():
            return folder
    raise FileNotFoundError(
        "MovieLens-100K was not found: install the file-only copy that RecBole ships with "
        "`pip install --no-deps recbole==1.2.1` (make does this), or set the source path to your own copy"
    )


def read_atomic(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a RecBole atomic file as ``(line_number, {field_name: raw_value})``, header types stripped.

    Rows whose column count differs from the header are yielded with the key ``"__malformed__"`` so the caller
    can count them.

    Example::

        user_id:token\\titem_id:token\\trating:float      (header)
        196\\t242\\t3                                       -> (2, {"user_id": "196", "item_id": "242", "rating": "3"})
    """
    lines = text_lines(path)  # UTF-8, each line decoded on its own: an error names the file and line
    header = next(lines, None)
    if header is None:
        return
    names = [column.split(":", 1)[0] for column in header.rstrip("\r\n").split("\t")]
    for line_number, line in enumerate(lines, start=2):
        values = line.rstrip("\r\n").split("\t")
        if not line.strip():
            continue
        if len(values) != len(names):
            yield line_number, {"__malformed__": line}
            continue
        yield line_number, dict(zip(names, values, strict=True))


def atomic_paths(folder: Path, dataset: str) -> dict[str, Path]:
    """``{"interactions": <folder>/<dataset>.inter, "items": <folder>/<dataset>.item}``."""
    return {"interactions": folder / f"{dataset}.inter", "items": folder / f"{dataset}.item"}


def read_recbole(paths: Paths, sink: RecordSink, options: Options, limits: Limits) -> Domain:
    """RecBole atomic files: ``paths`` has ``interactions`` (.inter) and ``items`` (.item).

    Options (defaults fit RecBole's MovieLens files): ``title_field`` (``movie_title``), ``year_field``
    (``release_year``, appended to the title in parentheses, MovieLens's own title form; null for none),
    ``attributes`` (``{"Genres": "class"}``: item line fields as ``{label: column}``, token sequences joined by
    ", "), and ``domain`` (``{name, noun, rating_scale, identifying}``; MovieLens's by default).
    """
    title_field = options.get("title_field", "movie_title")
    year_field = options.get("year_field", "release_year")
    attribute_fields: Mapping[str, str] = options.get("attributes", {"Genres": "class"})
    if not isinstance(attribute_fields, Mapping):
        raise SourceFormatError(f"options.attributes: map item line labels to columns, got {attribute_fields!r}")
    domain = domain_from_options(options.get("domain"), MOVIELENS)
    for line, row in read_atomic(paths["items"]):
        if "__malformed__" in row:
            sink.reject(paths["items"], line, "wrong_field_count", "", row["__malformed__"][:200])
            continue
        title = row.get(title_field, "").strip()
        if title.lower() in _PLACEHOLDER_TITLES:
            title = ""
        year = row.get(year_field, "").strip() if year_field else ""
        if title and year.isdigit():
            title = f"{title} ({year})"
        attributes = [
            (label, ", ".join(t for t in row.get(column, "").split() if t.lower() != "unknown"))
            for label, column in attribute_fields.items()
        ]
        make_item(sink, paths["items"], line, row.get("item_id"), title, attributes, limits)
    for line, row in read_atomic(paths["interactions"]):
        if "__malformed__" in row:
            sink.reject(paths["interactions"], line, "wrong_field_count", "", row["__malformed__"][:200])
            continue
        make_interaction(
            sink,
            paths["interactions"],
            line,
            domain,
            user_id=row.get("user_id"),
            item_id=row.get("item_id"),
            timestamp=parse_time(row.get("timestamp")),
            rating=row.get("rating"),
            review=row.get("review"),
            limits=limits,
            timestamp_required="timestamp" in row,
        )
    return domain
