"""Bad input, case by case: each stops the run with an error naming file, line and field, or is counted and skipped."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from recgpt.config import load_config
from recgpt.data.prepare import prepare
from recgpt.data.prepare_config import PrepareConfig
from recgpt.data.sources import adapter
from recgpt.data.sources.readers import Limits, SourceFormatError
from tests.data.collect import CollectSink

META = {"title": "Quiet Garden", "brand": "Leaf", "asin": "A"}


def amazon_files(tmp_path: Path, reviews: list[str]) -> dict[str, Path]:
    (tmp_path / "reviews.json").write_text("".join(line + "\n" for line in reviews))
    (tmp_path / "meta.json").write_text(json.dumps(META) + "\n")
    return {"reviews": tmp_path / "reviews.json", "meta": tmp_path / "meta.json"}


def review(user: str, time: int, text: str = "ok", rating: object = 4.0) -> str:
    return json.dumps({"reviewerID": user, "asin": "A", "overall": rating, "unixReviewTime": time, "reviewText": text})


def read(format_name: str, paths: dict[str, Path], limits: Limits | None = None) -> CollectSink:
    sink = CollectSink()
    adapter(format_name).load()(paths, sink, {}, limits or Limits())
    return sink


def test_a_ten_megabyte_review_is_rejected_with_its_line(tmp_path: Path):
    paths = amazon_files(tmp_path, [review("u", 1), review("u", 2, "x" * 10_000_000), review("u", 3)])
    sink = read("amazon2018", paths)
    assert [e.timestamp for e in sink.events] == [1.0, 3.0]
    assert sink.rejects == [("reviews.json", 2, "field_too_large", "review")]


def test_truncated_lines_are_skipped_and_truncated_gzip_stops_with_the_file(tmp_path: Path):
    paths = amazon_files(tmp_path, [review("u", 1), review("u", 2)[:30]])
    assert read("amazon2018", paths).rejects == [("reviews.json", 2, "invalid_json", "")]
    packed = gzip.compress(("\n".join(review("u", t) for t in range(2000)) + "\n").encode())
    broken = tmp_path / "reviews.json.gz"
    broken.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(SourceFormatError, match=r"reviews\.json\.gz:\d+: the file is truncated or corrupt"):
        read("amazon2018", {"reviews": broken, "meta": paths["meta"]})


def test_wrong_encoding_names_file_and_line(tmp_path: Path):
    (tmp_path / "movies.csv").write_bytes("movieId,title,genres\n1,Caf\xe9 Noir (1990),Drama\n".encode("latin-1"))
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(SourceFormatError, match=r"movies\.csv:2: not valid utf-8"):
        read("movielens-latest", {"items": tmp_path / "movies.csv", "ratings": tmp_path / "ratings.csv"})


def test_missing_columns_name_the_file_and_columns(tmp_path: Path):
    (tmp_path / "anime.csv").write_text("anime_id,name,type\n1,A,TV\n")
    (tmp_path / "rating.csv").write_text("user_id,anime_id,rating\n")
    with pytest.raises(SourceFormatError, match=r"anime\.csv: missing column\(s\) \['genre'\]"):
        read("anime", {"items": tmp_path / "anime.csv", "ratings": tmp_path / "rating.csv"})


def test_nan_out_of_range_and_unparseable_values_are_counted(tmp_path: Path):
    lines = [
        review("u", 1),
        review("u", 2, rating="NaN"),
        review("u", 3, rating=9.0),
        review("u", 4, rating=None),
        json.dumps({"reviewerID": "u", "asin": "A", "overall": 4.0, "reviewTime": "yesterday"}),
    ]
    sink = read("amazon2018", amazon_files(tmp_path, lines))
    assert sink.rejects == [
        ("reviews.json", 2, "invalid_rating", "rating"),
        ("reviews.json", 3, "rating_out_of_range", "rating"),
        ("reviews.json", 4, "invalid_rating", "rating"),
        ("reviews.json", 5, "invalid_timestamp", "timestamp"),
    ]


def config(tmp_path: Path, reviews: Path, meta: Path, **extra: object) -> PrepareConfig:
    path = tmp_path / "c.yaml"
    path.write_text(
        json.dumps(
            {
                "output": str(tmp_path / "out"),
                "min_user_interactions": 1,
                "max_seq_len": 128,
                "tokenizer": {"train_vocab_size": 300},
                "sources": [
                    {"name": "shop", "format": "amazon2018", "paths": {"reviews": str(reviews), "meta": str(meta)}}
                ],
                **extra,
            }
        )
    )
    return load_config(PrepareConfig, path)


def test_an_empty_file_stops_the_run_naming_the_file(tmp_path: Path):
    (tmp_path / "reviews.json").write_text("")
    (tmp_path / "meta.json").write_text(json.dumps(META) + "\n")
    with pytest.raises(ValueError, match=r"sources\[0\]\.paths\.reviews: .*reviews\.json is empty \(0 bytes\)"):
        prepare(config(tmp_path, tmp_path / "reviews.json", tmp_path / "meta.json"))
    (tmp_path / "reviews.json").write_text("\n  \n")  # blank lines only: no row
    with pytest.raises(ValueError, match=r"source 'shop': no interactions were read from its files \(reviews="):
        prepare(config(tmp_path, tmp_path / "reviews.json", tmp_path / "meta.json"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "meta.json", "reviews.json"]


def test_duplicates_are_removed_counted_and_rejects_written(tmp_path: Path):
    paths = amazon_files(tmp_path, [review("u", 1), review("u", 1), review("u", 2), review("u", 3, rating="x")])
    manifest = json.loads(
        prepare(config(tmp_path, paths["reviews"], paths["meta"], max_reject_fraction=0.5)).read_text()
    )
    shop = manifest["sources"]["shop"]
    assert (shop["duplicate_interaction"], shop["interactions_out"], shop["rejects"]) == (1, 2, {"invalid_rating": 1})
    [reject] = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert (Path(reject["file"]).name, reject["line"], reject["reason"], reject["field"]) == (
        "reviews.json",
        4,
        "invalid_rating",
        "rating",
    )
