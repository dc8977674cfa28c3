"""The RecBole atomic adapter on a fixture in RecBole's schema, and on the MovieLens-100K inside its wheel."""

from __future__ import annotations

from pathlib import Path

import pytest

from recgpt.data.sources import adapter
from recgpt.data.sources.readers import Limits, SourceFormatError
from recgpt.data.sources.recbole import atomic_paths, packaged_movielens_100k, read_atomic
from tests.data.collect import CollectSink


def write_fixture(folder: Path) -> None:
    (folder / "tiny.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
        "2\tunkonwn\tunkonwn\tunknown\n"
        "3\tMisérables, Les\t1995\tDrama Musical\n"
        "4\tbroken row\n",
        encoding="utf-8",
    )
    (folder / "tiny.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "7\t1\t4\t881250949\n"
        "7\t2\t3\t881250950\n"
        "7\t3\t9\t881250951\n"
        "7\t3\tnan\t881250952\n"
        "7\t3\t5\tyesterday\n"
        "8\t3\t5\t881250953\n"
        "8\t1\n",
        encoding="utf-8",
    )


def read(paths: dict[str, Path]) -> CollectSink:
    sink = CollectSink()
    adapter("recbole").load()(paths, sink, {}, Limits())
    return sink


def test_read_atomic_strips_types_and_flags_malformed_rows(tmp_path: Path):
    write_fixture(tmp_path)
    rows = list(read_atomic(tmp_path / "tiny.inter"))
    assert rows[0] == (2, {"user_id": "7", "item_id": "1", "rating": "4", "timestamp": "881250949"})
    assert rows[-1] == (8, {"__malformed__": "8\t1\n"})


def test_recbole_builds_titles_genres_and_rejects_with_lines(tmp_path: Path):
    write_fixture(tmp_path)
    sink = read(atomic_paths(tmp_path, "tiny"))
    assert sink.items["1"].title == "Toy Story (1995)"
    assert sink.items["1"].attributes == (("Genres", "Animation, Children's, Comedy"),)
    assert sink.items["3"].title == "Misérables, Les (1995)"
    assert "2" not in sink.items
    # Item 2 exists in the file (untitled): its event is delivered and dropped later, as an unknown item.
    assert [(e.user_id, e.item_id, e.rating, e.order) for e in sink.events] == [
        ("7", "1", 4.0, 2),
        ("7", "2", 3.0, 3),
        ("8", "3", 5.0, 7),
    ]
    assert sorted(sink.rejects) == sorted(
        [
            ("tiny.item", 3, "untitled_item", "title"),
            ("tiny.item", 5, "wrong_field_count", ""),
            ("tiny.inter", 4, "rating_out_of_range", "rating"),
            ("tiny.inter", 5, "invalid_rating", "rating"),
            ("tiny.inter", 6, "invalid_timestamp", "timestamp"),
            ("tiny.inter", 8, "wrong_field_count", ""),
        ]
    )


def test_packaged_movielens_100k_has_the_published_counts():
    sink = read(atomic_paths(packaged_movielens_100k(), "ml-100k"))
    assert len(sink.events) == 100_000
    assert len({e.user_id for e in sink.events}) == 943
    assert len(sink.items) == 1681  # 1,682 movies, one of them untitled ("unknown")
    assert sink.reasons == {"untitled_item": 1}


def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path: Path):
    write_fixture(tmp_path)
    text = (tmp_path / "tiny.item").read_bytes()
    (tmp_path / "tiny.item").write_bytes(text.replace("Misérables".encode(), "Mis\xe9rables".encode("latin-1")))
    with pytest.raises(SourceFormatError, match=r"tiny\.item:4: not valid utf-8"):
        read(atomic_paths(tmp_path, "tiny"))


def test_an_attributes_option_that_is_not_a_map_is_named(tmp_path: Path):
    write_fixture(tmp_path)
    with pytest.raises(SourceFormatError, match=r"options\.attributes: map item line labels to columns"):
        adapter("recbole").load()(atomic_paths(tmp_path, "tiny"), CollectSink(), {"attributes": "class"}, Limits())
