"""Every source adapter on a fixture written in that source's published schema and quirks (tests/fixtures/sources)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recgpt.data.render import render_event, render_item
from recgpt.data.sources import ADAPTERS, adapter
from recgpt.data.sources.readers import Limits, SourceFormatError
from tests.data.collect import CollectSink

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources"


def read(format_name: str, paths: dict[str, str], options: dict | None = None) -> tuple[CollectSink, object]:
    sink = CollectSink()
    full = {role: FIXTURES / relative for role, relative in paths.items()}
    adapter(format_name).check(format_name, full, options or {})
    domain = adapter(format_name).load()(full, sink, options or {}, Limits())
    return sink, domain


def line(sink: CollectSink, domain, index: int) -> str:
    event = sink.events[index]
    return render_event(sink.items[event.item_id], event, domain.rating_scale)


def test_every_format_has_a_fixture_test():  # generic: the DuckDB-native tests below
    tested = {
        "amazon2014",
        "amazon2018",
        "amazon2023",
        "yelp",
        "movielens-100k",
        "movielens-1m",
        "movielens-latest",
        "goodreads",
        "steam",
        "anime",
        "bookcrossing",
        "food",
        "hotelrec",
        "netflix",
        "wikirec",
        "generic",
        "recbole",
    }  # recbole: tests/data/test_recbole.py
    assert set(ADAPTERS) == tested


def test_amazon2014_reads_python_literal_metadata_and_gz():
    sink, domain = read(
        "amazon2014", {"reviews": "amazon2014/reviews_Beauty_5.json.gz", "meta": "amazon2014/meta_Beauty.json.gz"}
    )
    assert sink.items["B002"].title == "Rose Water Mist 'Classic'"
    assert render_item(sink.items["B001"], domain) == "Title: Lavender & Honey Soap; Brand: Meadow Co"
    assert line(sink, domain, 0) == (
        'Title: Lavender & Honey Soap; Brand: Meadow Co; Review: Soft and "gentle" on skin.; Rating: 5.0/5.0'
    )
    assert sink.events[2].timestamp == 1391990400.0  # "02 10, 2014" when unixReviewTime is missing
    assert [e.user_id for e in sink.events] == ["A1", "A1", "A2", "A3"]  # a literal review line is read too
    assert sink.reasons == {"untitled_item": 1, "invalid_json": 1}


def test_amazon2018_books_use_the_author_wording_and_unescape_titles():
    sink, domain = read(
        "amazon2018", {"reviews": "amazon2018/Books.json", "meta": "amazon2018/meta_Books.json"}, {"category": "books"}
    )
    assert domain.noun == "books"
    assert render_item(sink.items["0001"], domain) == "Title: Tom & Jerry's Guide; Author: Visit Amazon's Ann Lee Page"
    assert render_item(sink.items["0002"], domain) == "Title: The Quiet Garden"
    assert line(sink, domain, 0).endswith("Review: A classic. Loved it.; Rating: 5.0/5.0")
    assert sink.reasons == {"invalid_rating": 1}


def test_amazon2023_uses_parent_asin_store_and_millisecond_times():
    sink, domain = read(
        "amazon2023", {"reviews": "amazon2023/All_Beauty.jsonl.gz", "meta": "amazon2023/meta_All_Beauty.jsonl.gz"}
    )
    assert [e.item_id for e in sink.events] == ["P1", "P2"]
    assert sink.events[0].timestamp == pytest.approx(1588687728.923)
    assert render_item(sink.items["P1"], domain) == "Title: Jade Roller; Brand: Glow"
    assert render_item(sink.items["P2"], domain) == "Title: Gua Sha Stone"


def test_yelp_businesses_have_cities_and_bad_dates_are_rejected():
    sink, domain = read(
        "yelp",
        {"reviews": "yelp/yelp_academic_dataset_review.json", "business": "yelp/yelp_academic_dataset_business.json"},
    )
    assert domain.noun == "businesses"
    assert line(sink, domain, 0) == "Title: Blue Door Café; City: Tucson; Review: Best latte.; Rating: 5.0/5.0"
    assert sink.rejects == [("yelp_academic_dataset_review.json", 3, "invalid_timestamp", "timestamp")]


def test_movielens_100k_latin1_genre_flags():
    sink, domain = read(
        "movielens-100k",
        {"ratings": "movielens100k/data.tsv", "items": "movielens100k/item.psv", "genres": "movielens100k/genre.psv"},
    )
    assert sink.items["2"].title == "Rivière Noire (1995)"
    assert sink.items["1"].attributes == (("Genres", "Animation, Children's, Comedy"),)
    assert "267" not in sink.items
    assert line(sink, domain, 1) == "Title: Rivière Noire (1995); Genres: Drama, Musical; Rating: 5.0/5.0"
    assert sorted(sink.reasons.items()) == [("rating_out_of_range", 1), ("untitled_item", 1), ("wrong_field_count", 1)]


def test_movielens_1m_double_colon_layout():
    sink, _domain = read("movielens-1m", {"ratings": "movielens1m/ratings.txt", "items": "movielens1m/movies.txt"})
    assert sink.items["73"].title == "Rivière Noire (1995)"
    assert [(e.user_id, e.item_id, e.rating) for e in sink.events] == [
        ("1", "1", 5.0),
        ("1", "73", 3.0),
        ("2", "2", 4.0),
    ]
    assert sink.rejects == [("ratings.txt", 4, "wrong_field_count", "")]


def test_movielens_latest_quoted_titles_and_half_stars():
    sink, _domain = read(
        "movielens-latest", {"ratings": "movielens_latest/ratings.csv", "items": "movielens_latest/movies.csv"}
    )
    assert sink.items["11"].title == "Senator, The (1995)"
    assert sink.items["99"].attributes == ()  # "(no genres listed)"
    assert sink.events[1].rating == 3.5
    assert sink.reasons == {"rating_out_of_range": 1}


def test_goodreads_joins_authors_and_genres_and_treats_zero_as_unrated():
    sink, domain = read(
        "goodreads",
        {
            "reviews": "goodreads/goodreads_interactions_poetry.json.gz",
            "books": "goodreads/goodreads_books_poetry.json.gz",
            "authors": "goodreads/goodreads_book_authors.json.gz",
            "genres": "goodreads/goodreads_book_genres_initial.json.gz",
        },
    )
    assert render_item(sink.items["1333909"], domain) == (
        "Title: Good Harbor; Author: Anita Diamant; Genres: fiction, history, historical fiction, biography"
    )
    assert [e.rating for e in sink.events] == [3.0, None]
    assert sink.events[0].timestamp == 1447789055.0  # Tue Nov 17 11:37:35 -0800 2015
    assert sink.reasons == {"invalid_timestamp": 1}


def test_steam_has_no_header_and_no_timestamps():
    sink, domain = read("steam", {"interactions": "steam/steam-200k.csv"})
    assert [(e.user_id, e.item_id, e.timestamp) for e in sink.events] == [
        ("151603712", "The Elder Scrolls V Skyrim", None),
        ("151603712", "Fallout 4", None),
        ("187131847", "Dota 2", None),
    ]
    assert render_item(sink.items["Dota 2"], domain) == "Title: Dota 2"
    assert sink.rejects == [("steam-200k.csv", 5, "wrong_field_count", "")]


def test_anime_ten_point_scale_minus_one_is_unrated_and_entities_decode():
    sink, domain = read("anime", {"items": "anime/anime.csv", "ratings": "anime/rating.csv"})
    assert sink.items["820"].title == "Gintama'"
    assert [e.rating for e in sink.events] == [None, 10.0, 8.0]
    assert line(sink, domain, 1) == "Title: Steins;Gate; Genres: Sci-Fi, Thriller; Rating: 10.0/10.0"
    assert sink.reasons == {"rating_out_of_range": 1}


def test_bookcrossing_semicolons_latin1_and_broken_quote_rows():
    sink, domain = read(
        "bookcrossing", {"books": "bookcrossing/BX-Books.csv", "ratings": "bookcrossing/BX-Book-Ratings.csv"}
    )
    assert render_item(sink.items["3404921038"], domain) == "Title: Wie Barney es sieht.; Author: Eric Schröder"
    assert "078946697X" not in sink.items  # the stray \" row splits wrongly: rejected with its line
    assert [e.rating for e in sink.events] == [None, 5.0]
    assert sorted(sink.reasons.items()) == [("rating_out_of_range", 1), ("wrong_field_count", 1)]


def test_food_multiline_fields_zero_ratings_and_untitled_recipes():
    sink, domain = read("food", {"recipes": "food/RAW_recipes.csv", "interactions": "food/RAW_interactions.csv"})
    assert sink.items["137739"].title == "arriba baked winter squash mexican style"  # normalised at ingest
    assert line(sink, domain, 0) == (
        "Title: arriba baked winter squash mexican style; Review: Great with a salad. Cooked "
        'on top of stove for 15 minutes.Added a shake of cayenne, "really" good.; Rating: 4.0/5.0'
    )
    assert sink.events[1].rating is None
    assert sink.reasons == {"untitled_item": 1}


def test_hotelrec_hotels_come_from_the_url():
    sink, domain = read("hotelrec", {"reviews": "hotelrec/HotelRec.txt"})
    assert render_item(sink.items["d203048"], domain) == "Title: Hotel Artemide; City: Rome Lazio"
    assert [e.item_id for e in sink.events] == ["d1095143", "d203048"]
    assert sink.reasons == {"invalid_hotel_url": 1}


def test_netflix_blocks_unquoted_commas_and_several_files():
    sink, _domain = read("netflix", {"titles": "netflix/movie_titles.csv", "ratings": "netflix"})
    assert sink.items["4"].title == "Hello, Goodbye, and Amélie (1994)"
    assert sink.items["3"].title == "Character"
    assert [(e.user_id, e.item_id, e.rating) for e in sink.events] == [
        ("1488844", "1", 3.0),
        ("822109", "1", 5.0),
        ("1488844", "4", 4.0),
        ("885013", "2", 4.0),
        ("1488844", "3", 2.0),
    ]
    assert sink.events[-1].order > sink.events[-2].order  # order runs across the files
    assert sink.reasons == {"invalid_rating": 1}


def test_wikirec_tsv():
    sink, domain = read("wikirec", {"edits": "wikirec/edits.tsv", "articles": "wikirec/articles.tsv"})
    assert line(sink, domain, 0) == "Title: Ada Lovelace; Description: English mathematician and writer"
    assert sink.events[0].timestamp == 1546344000.0
    assert sink.reasons == {"invalid_timestamp": 1}


GENERIC_OPTIONS = {
    "interaction_columns": {
        "user_id": "customer",
        "item_id": "sku",
        "timestamp": "ts",
        "rating": "stars",
        "review": "text",
    },
    "item_columns": {"item_id": "sku", "title": "name", "attributes": {"Brand": "brand"}},
    "domain": {"name": "shop", "noun": "products", "identifying": ["Brand"]},
}


def ingest_generic(tmp_path: Path, paths: dict[str, Path], options: dict) -> tuple[list[dict], list[dict], list[dict]]:
    import json

    import pyarrow.parquet as pq

    from recgpt.data.ingest import ingest_source

    result = ingest_source("shop", "generic", paths, options, tmp_path / "shop", Limits(max_field_chars=50))
    folder = result.folder
    rejects = [json.loads(line) for line in (folder / "rejects.jsonl").read_text().splitlines()]
    return (
        pq.read_table(folder / "items.parquet").to_pylist(),
        pq.read_table(folder / "interactions.parquet").to_pylist(),
        rejects,
    )


def test_generic_maps_columns_from_csv_and_jsonl_in_duckdb(tmp_path: Path):
    paths = {"interactions": FIXTURES / "generic/events.csv", "items": FIXTURES / "generic/catalogue.jsonl"}
    items, events, rejects = ingest_generic(tmp_path, paths, GENERIC_OPTIONS)
    assert [(i["item_id"], i["title"], i["attributes"]) for i in items] == [
        ("s1", "Trail Shoe", '[["Brand", "Peak"]]'),
        ("s2", "Rain Jacket", "[]"),
    ]
    assert [(e["user_id"], e["item_id"], e["timestamp"], e["rating"], e["review"], e["ord"]) for e in events] == [
        ("c1", "s1", 1704189600.0, 5.0, "Great, would buy again", 2),
        ("c1", "s2", 1704200000.0, 4.0, "ok", 3),
    ]
    assert [(r["line"], r["reason"], r["field"]) for r in rejects] == [(4, "invalid_timestamp", "timestamp")]


def test_generic_rejects_bad_rows_with_their_line(tmp_path: Path):
    events = tmp_path / "events.csv"
    events.write_text(
        "customer,sku,ts,stars,text\n"
        "c1,s1,1,5,fine\n"  # kept
        ",s1,2,5,no user\n"
        "c1,s1,3,nan,NaN rating\n"
        "c1,s1,4,7,out of range\n"
        "c1,s1,13/32/2024,4,bad date\n"
        f"c1,s1,5,4,{'x' * 60}\n"  # a review over max_field_chars (50 here)
        "c1,s1,2024-01-02,4,an ISO date among unix times parses\n"
    )
    catalogue = tmp_path / "items.csv"
    catalogue.write_text("sku,name,brand\ns1,Trail Shoe,Peak\ns2,,Peak\n")
    items, kept, rejects = ingest_generic(tmp_path, {"interactions": events, "items": catalogue}, GENERIC_OPTIONS)
    assert [i["item_id"] for i in items] == ["s1"]
    assert [e["ord"] for e in kept] == [2, 8]
    assert [(Path(r["file"]).name, r["line"], r["reason"], r["field"]) for r in rejects] == [
        ("events.csv", 3, "missing_id", "user_id"),
        ("events.csv", 4, "invalid_rating", "rating"),
        ("events.csv", 5, "rating_out_of_range", "rating"),
        ("events.csv", 6, "invalid_timestamp", "timestamp"),
        ("events.csv", 7, "field_too_large", "review"),
        ("items.csv", 3, "untitled_item", "title"),
    ]


def test_generic_names_a_missing_mapped_column(tmp_path: Path):
    options = {
        "interaction_columns": {"user_id": "client", "item_id": "sku"},
        "item_columns": {"item_id": "sku", "title": "name"},
    }
    paths = {"interactions": FIXTURES / "generic/events.csv", "items": FIXTURES / "generic/catalogue.jsonl"}
    with pytest.raises(SourceFormatError, match=r"events\.csv: missing column\(s\) \['client'\]; the header has"):
        ingest_generic(tmp_path, paths, options)


def test_generic_names_a_file_in_the_wrong_encoding(tmp_path: Path):
    events = tmp_path / "events.csv"
    events.write_bytes("customer,sku\nc1,s1\nc2,caf\xe9\n".encode("latin-1"))
    catalogue = tmp_path / "items.csv"
    catalogue.write_text("sku,name\ns1,Shoe\n")
    options = {
        "interaction_columns": {"user_id": "customer", "item_id": "sku"},
        "item_columns": {"item_id": "sku", "title": "name"},
    }
    with pytest.raises(SourceFormatError, match=r"source 'shop': .*(unicode|UTF-8|utf-8)"):
        ingest_generic(tmp_path, {"interactions": events, "items": catalogue}, options)


def test_wrong_paths_and_options_are_named():
    with pytest.raises(SourceFormatError, match=r"missing \['meta'\]"):
        adapter("amazon2018").check("beauty", {"reviews": "x"}, {})
    with pytest.raises(SourceFormatError, match=r"unknown option\(s\) \['colour'\]"):
        adapter("amazon2018").check("beauty", {"reviews": "x", "meta": "y"}, {"colour": 1})
    with pytest.raises(SourceFormatError, match="unknown source format 'imdb'"):
        adapter("imdb")


def read_files(format_name: str, paths: dict[str, Path], options: dict | None = None) -> CollectSink:
    sink = CollectSink()
    adapter(format_name).load()(paths, sink, options or {}, Limits())
    return sink


def test_latin1_dumps_read_their_utf8_lines_as_utf8(tmp_path: Path):
    """MovieLens 100K / 1M and Book-Crossing are Latin-1 with some UTF-8 lines: each line is decoded on its own."""
    flags = "|".join(["0"] * 18 + ["1"])
    (tmp_path / "u.item").write_bytes(
        f"1|Rivi\xe8re (1995)|||x|{flags}\n".encode("latin-1") + f"2|Am\u00e9lie \u4e2d (2001)|||x|{flags}\n".encode()
    )
    (tmp_path / "u.data").write_text("1\t1\t4\t10\n1\t2\t5\t11\n")
    ml = read_files("movielens-100k", {"items": tmp_path / "u.item", "ratings": tmp_path / "u.data"})
    assert [ml.items[i].title for i in "12"] == ["Rivière (1995)", "Amélie 中 (2001)"]
    (tmp_path / "movies.dat").write_bytes(
        "1::Caf\xe9 (1990)::Drama\n".encode("latin-1") + "2::Café ☕ (1991)::Drama\n".encode()
    )
    ml1m = read_files("movielens-1m", {"items": tmp_path / "movies.dat", "ratings": tmp_path / "u.data"})
    assert [ml1m.items[i].title for i in "12"] == ["Café (1990)", "Café ☕ (1991)"]
    header = '"ISBN";"Book-Title";"Book-Author"\n'
    (tmp_path / "books.csv").write_bytes(
        header.encode() + '"1";"Ni\xf1o";"Pe\xf1a"\n'.encode("latin-1") + '"2";"Niño ünd Ǆ";"Peña"\n'.encode()
    )
    (tmp_path / "ratings.csv").write_text('"User-ID";"ISBN";"Book-Rating"\n"u";"1";"5"\n')
    bx = read_files("bookcrossing", {"books": tmp_path / "books.csv", "ratings": tmp_path / "ratings.csv"})
    assert [(bx.items[i].title, bx.items[i].attributes) for i in "12"] == [
        ("Niño", (("Author", "Peña"),)),
        ("Niño ünd Ǆ", (("Author", "Peña"),)),
    ]


def test_list_and_object_values_in_json_dumps_are_joined_or_rejected(tmp_path: Path):
    business = tmp_path / "business.json"
    business.write_text(
        "\n".join(
            json.dumps(row)
            for row in [
                {"business_id": "b1", "name": "Blue Door", "city": ["Reno", "Sparks"]},  # attribute list: joined
                {"business_id": "b2", "name": ["Blue", "Door"], "city": "Reno"},  # list title: rejected
                {"business_id": {"id": "b3"}, "name": "Cafe", "city": "Reno"},  # object id: rejected
                {"business_id": "b4", "name": "Deli", "city": {"name": "Reno"}},  # object attribute: rejected
            ]
        )
        + "\n"
    )
    reviews = tmp_path / "reviews.json"
    review = {"user_id": "u", "business_id": "b1", "stars": 4, "date": "2020-01-01 00:00:00"}
    reviews.write_text(json.dumps(review) + "\n" + json.dumps({**review, "text": ["great", "place"]}) + "\n")
    sink = read_files("yelp", {"business": business, "reviews": reviews})
    assert sink.items["b1"].attributes == (("City", "Reno, Sparks"),) and set(sink.items) == {"b1"}
    assert sink.rejects == [
        ("business.json", 2, "list_value", "title"),
        ("business.json", 3, "nested_value", "item_id"),
        ("business.json", 4, "nested_value", "City"),
        ("reviews.json", 2, "list_value", "review"),
    ]
    assert [e.review for e in sink.events] == [None]


def test_a_deeply_nested_json_line_is_a_counted_reject(tmp_path: Path):
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"asin": "A", "title": "T"}) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    reviews = tmp_path / "reviews.json"
    reviews.write_text('{"a": ' * 50_000 + "1" + "}" * 50_000 + "\n")
    for release in ("amazon2014", "amazon2018"):  # 2014 also tries Python literals
        sink = read_files(release, {"meta": meta, "reviews": reviews})
        assert sink.rejects == [("meta.json", 2, "too_deeply_nested", ""), ("reviews.json", 1, "too_deeply_nested", "")]


def test_goodreads_bad_genre_counts_and_author_lists_name_file_and_line(tmp_path: Path):
    def write(name: str, rows: list[dict]) -> Path:
        (tmp_path / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
        return tmp_path / name

    paths = {
        "books": write("books.json", [{"book_id": "1", "title": "Poems", "authors": [{"author_id": "9"}]},
                                      {"book_id": "2", "title": "Odes", "authors": ["9"]}]),
        "genres": write("genres.json", [{"book_id": "1", "genres": {"poetry": "many"}},
                                        {"book_id": "1", "genres": ["poetry"]}]),
        "authors": write("authors.json", [{"author_id": "9", "name": ["Ann", "Bo"]}]),
        "reviews": write("reviews.json", [{"user_id": "u", "book_id": "1", "rating": 4,
                                           "date_added": "Sun Jul 30 07:44:10 -0700 2017"}]),
    }  # fmt: skip
    sink = read_files("goodreads", paths)
    assert sink.rejects == [
        ("genres.json", 1, "invalid_genres", "genres"),
        ("genres.json", 2, "invalid_genres", "genres"),
        ("books.json", 2, "invalid_authors", "authors"),
    ]
    assert sink.items["1"].attributes == (("Author", "Ann, Bo"),)
