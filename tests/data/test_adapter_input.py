"""Hostile input to the generic adapter and the ingest stage: every bad row is a counted reject with its line."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recgpt.data.ingest import ingest_source
from recgpt.data.sources.readers import Limits, SourceFormatError

OPTIONS = {
    "interaction_columns": {"user_id": "customer", "item_id": "sku", "timestamp": "ts", "rating": "stars"},
    "item_columns": {"item_id": "sku", "title": "name", "attributes": {"Brand": "brand"}},
}


def jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def ingest(tmp_path: Path, items: Path, events: Path, options: dict | None = None) -> dict:
    result = ingest_source("shop", "generic", {"items": items, "interactions": events}, options or OPTIONS,
                           tmp_path / "work" / "shop", Limits())  # fmt: skip
    folder = result.folder
    return {
        "result": result,
        "items": pq.read_table(folder / "items.parquet").to_pylist(),
        "events": pq.read_table(folder / "interactions.parquet").to_pylist(),
        "rejects": [
            (Path(r["file"]).name, r["line"], r["reason"], r["field"])
            for r in map(json.loads, (folder / "rejects.jsonl").read_text(encoding="utf-8").splitlines())
        ],
    }


def test_json_ids_are_text_whatever_type_each_line_gives_them(tmp_path: Path):
    items = jsonl(
        tmp_path / "items.jsonl",
        [{"sku": 12, "name": "A", "brand": None}, {"sku": "ab", "name": "B"}, {"sku": 7.5, "name": "C"}],
    )
    events = jsonl(
        tmp_path / "events.jsonl",
        [
            {"customer": 1, "sku": "12", "ts": 1, "stars": 4},
            {"customer": "1", "sku": "ab", "ts": "2", "stars": "4.5"},
            {"customer": 1, "sku": 12, "ts": 3.0, "stars": 5},
            {"customer": 1, "sku": "7.5", "ts": 4, "stars": 5},
        ],
    )
    out = ingest(tmp_path, items, events)
    assert [i["item_id"] for i in out["items"]] == ["12", "ab", "7.5"]
    assert [(e["user_id"], e["item_id"], e["rating"]) for e in out["events"]] == [
        ("1", "12", 4.0),
        ("1", "ab", 4.5),
        ("1", "12", 5.0),
        ("1", "7.5", 5.0),
    ]
    assert out["rejects"] == []


def test_one_malformed_row_is_a_counted_reject_not_the_end_of_the_run(tmp_path: Path):
    items = tmp_path / "items.csv"
    items.write_text('sku,name,brand\ns1,Shoe,Peak\ns2,"Jacket, rain",Peak,EXTRA\ns3,Hat,\n')
    events = jsonl(
        tmp_path / "events.jsonl",
        [
            {"customer": "c", "sku": "s1", "ts": 1, "stars": None},
            '{"customer": "c", "sku": "s3", "ts": 2',  # truncated
            "",  # blank lines are skipped, line numbers still count them
            "[" * 100_000 + "]" * 100_000,
            '{"customer": "c", "sku": "s1", "ts": 5, "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
            "[1, 2]",
            {"customer": "c", "sku": "s3", "ts": 7},
        ],
    )
    out = ingest(tmp_path, items, events)
    assert [i["item_id"] for i in out["items"]] == ["s1", "s3"]
    assert [e["ord"] for e in out["events"]] == [1, 7]
    assert out["rejects"] == [
        ("events.jsonl", 2, "invalid_json", ""),
        ("events.jsonl", 4, "too_deeply_nested", ""),
        ("events.jsonl", 5, "too_deeply_nested", ""),
        ("events.jsonl", 6, "invalid_json", ""),
        ("items.csv", 3, "wrong_field_count", ""),
    ]
    assert out["result"].rejects == {"invalid_json": 2, "too_deeply_nested": 2, "wrong_field_count": 1}


def test_list_and_object_values_are_joined_or_rejected_never_written_as_repr(tmp_path: Path):
    items = jsonl(
        tmp_path / "items.jsonl",
        [
            {"sku": "s1", "name": "Shoe", "brand": ["Peak", "Trail Co", "", None]},  # an attribute list: joined
            {"sku": "s2", "name": ["Rain", "Jacket"], "brand": "Peak"},  # a list title: rejected
            {"sku": "s3", "name": "Hat", "brand": {"name": "Peak"}},  # an object: rejected
            {"sku": ["s4"], "name": "Cap", "brand": "Peak"},  # a list id: rejected
            {"sku": "s5", "name": "Sock", "brand": [["nested"]]},
        ],
    )
    events = jsonl(tmp_path / "events.jsonl", [{"customer": "c", "sku": "s1", "ts": 1, "stars": [4]}])
    out = ingest(tmp_path, items, events)
    assert [(i["item_id"], i["title"], json.loads(i["attributes"])) for i in out["items"]] == [
        ("s1", "Shoe", [["Brand", "Peak, Trail Co"]])
    ]
    assert out["rejects"] == [
        ("events.jsonl", 1, "list_value", "rating"),
        ("items.jsonl", 2, "list_value", "title"),
        ("items.jsonl", 3, "nested_value", "Brand"),
        ("items.jsonl", 4, "list_value", "item_id"),
        ("items.jsonl", 5, "nested_value", "Brand"),
    ]


def test_parquet_columns_of_any_type_are_read_as_text(tmp_path: Path):
    items = tmp_path / "items.parquet"
    pq.write_table(
        pa.table({"sku": [1, 2], "name": ["One", "Two"], "brand": [["A", "B"], ["C"]]}), items
    )  # int ids, a list column
    events = tmp_path / "events.parquet"
    pq.write_table(pa.table({"customer": [10, 10], "sku": [1, 2], "ts": [1.5, 2.0], "stars": [4, 5]}), events)
    out = ingest(tmp_path, items, events)
    assert [(i["item_id"], json.loads(i["attributes"])) for i in out["items"]] == [
        ("1", [["Brand", "A, B"]]),
        ("2", [["Brand", "C"]]),
    ]
    assert [(e["user_id"], e["item_id"], e["timestamp"], e["ord"]) for e in out["events"]] == [
        ("10", "1", 1.5, 1),
        ("10", "2", 2.0, 2),
    ]


def test_quotes_in_paths_column_names_and_values_are_data_not_sql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / 'it\'s "x"'
    folder.mkdir()
    items = folder / "cat'alogue.csv"
    items.write_text("id'); COPY (SELECT 1) TO 'y.csv'; --,na\"me\ns1,O'Brien\n")
    events = folder / "ev'ents.csv"
    events.write_text("cu\"st,s'ku\nc1,s1\n")
    options = {
        "interaction_columns": {"user_id": 'cu"st', "item_id": "s'ku"},
        "item_columns": {"item_id": "id'); COPY (SELECT 1) TO 'y.csv'; --", "title": 'na"me'},
    }
    out = ingest(tmp_path, items, events, options)
    assert [(i["item_id"], i["title"], i["file"], i["line"]) for i in out["items"]] == [
        ("s1", "O'Brien", str(items), 2)
    ]
    assert [(e["user_id"], e["item_id"]) for e in out["events"]] == [("c1", "s1")]
    assert not list(tmp_path.rglob("y.csv"))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("delimiter", "';--", r"options\.delimiter: one character"),
        ("encoding", "utf-8'; --", r"options\.encoding: unknown encoding"),
        ("timestamp_unit", "s'); --", r"options\.timestamp_unit: s or ms"),
    ],
)
def test_hostile_options_are_refused_by_name(tmp_path: Path, option: str, value: str, message: str):
    items = tmp_path / "items.csv"
    items.write_text("sku,name\ns1,Shoe\n")
    events = tmp_path / "events.csv"
    events.write_text("customer,sku,ts,stars\nc1,s1,1,4\n")
    options = {**OPTIONS, "item_columns": {"item_id": "sku", "title": "name"}, option: value}
    with pytest.raises(SourceFormatError, match=r"^source 'shop': " + message):
        ingest(tmp_path, items, events, options)


def test_duplicate_item_ids_are_rejected_with_file_and_line_first_row_wins(tmp_path: Path):
    items = tmp_path / "items.csv"
    items.write_text("sku,name,brand\ns1,First,Peak\ns2,Other,Peak\ns1,Second,Peak\ns1,Third,Peak\n")
    events = tmp_path / "events.csv"
    events.write_text("customer,sku,ts,stars\nc1,s1,1,4\n")
    out = ingest(tmp_path, items, events)
    assert out["rejects"] == [
        ("items.csv", 4, "duplicate_item_id", "item_id"),
        ("items.csv", 5, "duplicate_item_id", "item_id"),
    ]
    assert (out["result"].items, out["result"].rejects) == (2, {"duplicate_item_id": 2})


def test_a_python_adapter_reports_duplicate_item_ids_too(tmp_path: Path):
    meta = jsonl(tmp_path / "meta.json", [{"asin": "A", "title": "One"}, {"asin": "A", "title": "Two"}])
    reviews = jsonl(tmp_path / "reviews.json", [{"reviewerID": "u", "asin": "A", "overall": 4, "unixReviewTime": 1}])
    result = ingest_source("shop", "amazon2018", {"reviews": reviews, "meta": meta}, {}, tmp_path / "w", Limits())
    [reject] = [json.loads(line) for line in (result.folder / "rejects.jsonl").read_text().splitlines()]
    assert (Path(reject["file"]).name, reject["line"], reject["reason"]) == ("meta.json", 2, "duplicate_item_id")
    assert (result.items, dict(result.rejects)) == (1, {"duplicate_item_id": 1})


def test_a_folder_given_as_a_file_is_named(tmp_path: Path):
    events = tmp_path / "events.csv"
    events.write_text("customer,sku\nc1,s1\n")
    with pytest.raises(SourceFormatError, match=r"source 'shop': .*items\.csv: is a folder"):
        (tmp_path / "items.csv").mkdir()
        ingest(tmp_path, tmp_path / "items.csv", events)


def test_unreadable_parquet_and_zstd_files_are_named(tmp_path: Path):
    events = tmp_path / "events.csv"
    events.write_text("customer,sku\nc1,s1\n")
    broken = tmp_path / "items.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceFormatError, match=r"source 'shop': .*items\.parquet: not a readable Parquet file"):
        ingest(tmp_path, broken, events)
    packed = tmp_path / "items.csv.zst"
    packed.write_bytes(b"\x28\xb5\x2f\xfd")
    with pytest.raises(SourceFormatError, match=r"items\.csv\.zst: zstd files are not read; decompress it"):
        ingest(tmp_path, packed, events)


def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path: Path):
    items = tmp_path / "items.csv"
    items.write_text("\ufeffsku,name,brand\ns1,Shoe,Peak\n", encoding="utf-8")
    events = tmp_path / "events.jsonl"
    events.write_text('\ufeff{"customer": "c", "sku": "s1", "ts": 1, "stars": 4}\n', encoding="utf-8")
    out = ingest(tmp_path, items, events)
    assert ([i["item_id"] for i in out["items"]], [e["ord"] for e in out["events"]], out["rejects"]) == (
        ["s1"],
        [1],
        [],
    )
