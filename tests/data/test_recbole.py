"""The RecBole atomic reader on a fixture in RecBole's schema, and on the MovieLens-100K that ships in its wheel."""

from __future__ import annotations

from pathlib import Path

from recgpt.data.records import MOVIELENS
from recgpt.data.sources.recbole import load_recbole, packaged_movielens_100k, read_atomic


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


def test_read_atomic_strips_types_and_flags_malformed_rows(tmp_path: Path):
    write_fixture(tmp_path)
    rows = list(read_atomic(tmp_path / "tiny.inter"))
    assert rows[0] == (2, {"user_id": "7", "item_id": "1", "rating": "4", "timestamp": "881250949"})
    assert rows[-1] == (8, {"__malformed__": "8\t1\n"})


def test_load_recbole_builds_titles_genres_and_counts_rejects(tmp_path: Path):
    write_fixture(tmp_path)
    data = load_recbole(tmp_path, "tiny", MOVIELENS)
    assert data.items["1"].title == "Toy Story (1995)"
    assert data.items["1"].attributes == (("Genres", "Animation, Children's, Comedy"),)
    assert data.items["3"].title == "Misérables, Les (1995)"
    assert "2" not in data.items
    assert [(e.user_id, e.item_id, e.rating, e.order) for e in data.interactions] == [
        ("7", "1", 4.0, 2),
        ("8", "3", 5.0, 7),
    ]
    assert data.rows_read == 7
    assert dict(data.rejects) == {
        "untitled_item": 1,
        "malformed_item_row": 1,
        "unknown_or_untitled_item": 1,
        "rating_out_of_range": 1,
        "invalid_rating": 1,
        "invalid_timestamp": 1,
        "malformed_row": 1,
    }


def test_packaged_movielens_100k_has_the_published_counts():
    data = load_recbole(packaged_movielens_100k(), "ml-100k", MOVIELENS)
    assert data.rows_read == 100_000
    assert len({e.user_id for e in data.interactions}) == 943
    assert len(data.items) == 1681  # 1,682 movies, one of them untitled ("unknown")
    assert data.rejects == {"untitled_item": 1, "unknown_or_untitled_item": 9}
