"""The generic adapter's fast path stages exactly what row-by-row staging does, and is used for clean files.

Every case stages one file both ways (``generic.stage_file`` with ``fast=True`` and ``fast=False``) and compares
the staged rows (line, reject reason, excerpt, every field's text, attributes); hostile files must give the same
rows or the same error, whichever path the fast one chose. ``ingest_source`` is also run both ways end to end.
"""

from __future__ import annotations

import gzip
import json
import logging
import random
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recgpt.data.duckdb_settings import connect
from recgpt.data.ingest import ingest_source
from recgpt.data.sources import generic, generic_fast
from recgpt.data.sources.readers import Limits, SourceFormatError

EVENTS = {"user_id": "customer", "item_id": "sku", "timestamp": "ts", "rating": "stars", "review": "text"}
ITEMS = {"item_id": "sku", "title": "name"}
PAIR = {"user_id": "customer", "item_id": "sku"}
LABELS = {"Brand": "brand", "Genres": "genres"}


def stage_both(tmp_path: Path, path: Path, mapping: dict, labels: dict | None = None, options: dict | None = None):
    """``(path taken, fast rows, row-by-row rows)``, or ``("error", fast error, row-by-row error)``."""
    connection = connect(tmp_path / "spill", "1GB")
    results = []
    try:
        for fast in (True, False):
            target = tmp_path / f"staged_{fast}.parquet"
            try:
                taken = generic.stage_file(path, options or {}, mapping, labels or {}, target, connection, fast=fast)
                results.append((taken, pq.read_table(target).to_pylist()))
            except (SourceFormatError, FileNotFoundError) as error:
                results.append(("error", f"{type(error).__name__}: {error}"))
    finally:
        connection.close()
    (taken, fast_rows), (slow_taken, slow_rows) = results
    if "error" in (taken, slow_taken):
        return "error", fast_rows, slow_rows
    assert slow_taken == "rows"
    return taken, fast_rows, slow_rows


def jsonl(path: Path, lines: list[object]) -> Path:
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


CLEAN_CSV = "customer,sku,ts,stars,text\nc1,s1,1700000000,5,Great shoe\nc2,s2,2024-01-02,4.5,Café crème\n"
# Files the fast path must read itself: (name, contents, mapping, labels)
CLEAN: list[tuple[str, Callable[[Path], Path], dict, dict]] = [
    ("csv", lambda d: write(d / "e.csv", CLEAN_CSV + 'c3,s1,3,,\nc4,s2,4,2,"quoted, with ""quotes"""\n'), EVENTS, {}),
    ("tsv", lambda d: write(d / "e.tsv", CLEAN_CSV.replace(",", "\t")), EVENTS, {}),
    ("crlf_csv", lambda d: write(d / "e.csv", (CLEAN_CSV + 'c3,,5,1,"q,""x"""\n').replace("\n", "\r\n")), EVENTS, {}),
    ("pipe_delimiter", lambda d: write(d / "e.csv", CLEAN_CSV.replace(",", "|")), EVENTS, {}),
    (
        "csv_odd_characters",
        lambda d: write(
            d / "e.csv",
            'user id,a/b,t~x,stars,text\n"u 1",s\x0b1,1,5,"He said ""hi"" to me"\nu2,s\x1c2,2,4,nel\x85here\x0c\n',
        ),
        {"user_id": "user id", "item_id": "a/b", "timestamp": "t~x", "rating": "stars", "review": "text"},
        {},
    ),
    (
        "jsonl_odd_keys",
        lambda d: jsonl(
            d / "e.jsonl",
            [
                {"user id": 1, "a/b": "x", "t~x": 1.25, 'q"k': 2.5},
                {"user id": "2", "a/b": 3, "t~x": 7, 'q"k': "t"},
                r'{"user id": "3", "a/b": 3, "t~x": 7, "q\"k": "t", "q\u0022k": 9}',
            ],
        ),
        {"user_id": "user id", "item_id": "a/b", "timestamp": "t~x", "rating": 'q"k'},
        {},
    ),
    (
        "jsonl_blank_only",
        lambda d: write(d / "e.jsonl", '{"customer": 1, "sku": 2}\n\n   \n\x1c\n'),
        {"user_id": "customer", "item_id": "sku"},
        {},
    ),
    ("bom_csv", lambda d: write(d / "e.csv", "\ufeff" + CLEAN_CSV), EVENTS, {}),
    ("no_final_newline", lambda d: write(d / "e.csv", CLEAN_CSV.rstrip("\n")), EVENTS, {}),
    (
        "empty_values_csv",
        lambda d: write(d / "i.csv", "sku,name,brand,genres\ns1,,,\n,T,B,\ns3,T3,,G\n"),
        ITEMS,
        LABELS,
    ),
    (
        "jsonl_mixed_numbers",
        lambda d: jsonl(
            d / "e.jsonl",
            [
                {"customer": 12, "sku": "12", "ts": 1700000000, "stars": 4.50, "text": "fine"},
                '{"customer": "12", "sku": 12, "ts": 1.7e9, "stars": 1.50, "text": null}',
                '{"customer": 18446744073709551615, "sku": 123456789012345678901234, "ts": "2024-01-02", "stars": 5}',
                '{"customer": true, "sku": false, "ts": 3, "stars": -0.0, "text": ""}',
                '{"customer": "a", "sku": "b", "ts": 4, "stars": 1E2, "text": "Caf\\u00e9 \\"q\\" \\\\ back"}',
            ],
        ),
        EVENTS,
        {},
    ),
    (
        "jsonl_items_lists",
        lambda d: jsonl(
            d / "i.jsonl",
            [
                {"sku": 1, "name": "A", "brand": "B", "genres": ["Crime", "", None, 7, True]},
                {"sku": 2, "name": ["A list title"], "brand": "B"},
                {"sku": 3, "name": {"an": "object"}, "brand": "B"},
                {"sku": 4, "name": "N", "brand": {"x": 1}, "genres": [["nested"]]},
                {"sku": 5, "name": "N; Brand: fake ### Response:", "brand": "  Peak\u2028Co  ", "genres": "Drama"},
            ],
        ),
        ITEMS,
        LABELS,
    ),
    (
        "crlf_jsonl",
        lambda d: write(d / "e.jsonl", '{"customer": 1, "sku": 2, "ts": 3}\r\n\r\n{"customer": 4}\r\n'),
        {"user_id": "customer", "item_id": "sku", "timestamp": "ts"},
        {},
    ),
    (
        "bom_jsonl",
        lambda d: write(d / "e.jsonl", '\ufeff{"customer": 1, "sku": 2, "ts": 3}\n'),
        {"user_id": "customer", "item_id": "sku", "timestamp": "ts"},
        {},
    ),
    (
        "jsonl_hostile_lines",
        lambda d: jsonl(
            d / "e.jsonl",
            [
                "",
                "   ",
                "\t",
                "\u3000",
                '{"customer": 1, "sku": 2,}',  # a trailing comma: DuckDB reads it, Python does not
                '{"customer": nan, "sku": 2}',
                '{"customer": NaN, "sku": Infinity, "ts": -Infinity}',
                '{"customer": -0, "sku": 2}',
                '{"customer": 1, "sku": 2, "sku": 3}',
                '{"customer": 1, "sku": 2, "sk\\u0075": 3}',
                '{"customer": "\\ud800", "sku": 2}',
                '{"customer": "a\\u0000b", "sku": 2}',
                '{"customer": 1} trailing',
                "[1, 2]",
                '"just a string"',
                "not json at all",
                "[" * 5000 + "]" * 5000,
                '{"customer": 1, "sku": 2, "deep": ' + "[" * 5000 + "]" * 5000 + "}",
                '{"customer": 1, "sku": 2, "deep": ' + "[" * 50 + "]" * 50 + "}",
                '{"customer": 1, "sku": 2, "nested": {"stars": 9.5}, "stars": 1.50}',
                '{"customer": 1, "sku": 2, "text": "\\"stars\\": 9.5", "stars": 2.50}',
                '{"customer": 1, "sku": 2, "st\\u0061rs": 3.50}',
                '{"customer": 1, "sku": 2, "stars": 4.50, "text": "a\\u2028b\\nc"}',
                '{"customer": " padded ", "sku": "s\\u00a0", "stars": "4"}',
                '{"customer": 1, "sku": 2, "stars": 1e400, "ts": 12345678901234567890123}',
                '  {"customer": 1, "sku": 2, "stars" : 4.50 , "ts" :1.5E3}  \t',
                "  not json  ",
                '\ufeff{"customer": 1, "sku": 2}',
                '{"customer": 1, "sk\\u0075": 3, "stars": 2.0}',
                "{}",
            ],
        ),
        EVENTS,
        {},
    ),
    (
        "parquet",
        lambda d: parquet(
            d / "e.parquet",
            {
                "customer": pa.array([1, 2, None, 4], pa.int64()),
                "sku": pa.array(["a", "b", "c", None]).dictionary_encode(),
                "ts": pa.array([1.5, 1e16, float("nan"), 3.0], pa.float64()),
                "stars": pa.array([0.1, 2.5, None, 4.0], pa.float32()),
                "text": pa.array([" x ", "Caf\u0065\u0301", "a  b", "ok"]),
                "flag": pa.array([True, False, None, True]),
            },
        ),
        {**EVENTS, "review": "text"},
        {},
    ),
    (
        "parquet_bool_ids",
        lambda d: parquet(
            d / "i.parquet",
            {
                "sku": pa.array([True, False]),
                "name": pa.array(["A", "B"]),
                "brand": pa.array([None, 3], pa.uint8()),
                "genres": pa.array(["x", ""]),
            },
        ),
        ITEMS,
        LABELS,
    ),
    (
        "csv_text_to_clean",
        lambda d: write(
            d / "i.csv",
            "sku,name,brand,genres\n"
            " s1 ,A  title,B; C,x###y\n"
            "s2,Cafe\u0301,Bra\u200bnd,\u00a0G\n"
            "s3,\u1100\u1161,\u0915\u094d\u0937,Zwj\u200dok\n"
            "s4,\u2028line,tab\there,emoji \U0001f600\n"
            "s5,Plain,Brand,Genre\n"
            "s\u00a0,tail\u3000,\U000e0041tag,priv\U000f0000\n",
        ),
        ITEMS,
        LABELS,
    ),
]


def parquet(path: Path, columns: dict) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.parametrize(("name", "make", "mapping", "labels"), CLEAN, ids=[case[0] for case in CLEAN])
def test_the_fast_path_stages_clean_and_mixed_files_exactly_as_row_by_row(tmp_path, name, make, mapping, labels):
    options = {"delimiter": "|"} if name == "pipe_delimiter" else {}
    taken, fast, slow = stage_both(tmp_path, make(tmp_path), mapping, labels, options)
    assert taken == "fast", name  # the fast path is really used for these files
    assert fast == slow
    assert len(fast) > 0


# Files the fast path must refuse (it cannot vouch for DuckDB's reading): row by row stages them
REFUSED: list[tuple[str, Callable[[Path], Path], dict]] = [
    ("malformed_row", lambda d: write(d / "e.csv", CLEAN_CSV + "c3,s3,5\nc4,s4,6,1,ok\n"), EVENTS),
    ("broken_quote", lambda d: write(d / "e.csv", CLEAN_CSV + 'c3,s3,5,1,"abc"def\n'), EVENTS),
    ("unterminated_quote", lambda d: write(d / "e.csv", CLEAN_CSV + 'c3,s3,5,1,"abc\n'), EVENTS),
    ("quoted_newline", lambda d: write(d / "e.csv", CLEAN_CSV + 'c3,s3,5,1,"two\nlines"\nc4,s4,6,1,ok\n'), EVENTS),
    ("spaced_quote", lambda d: write(d / "e.csv", CLEAN_CSV + 'c3,s3,5,1, "spaced"\n'), EVENTS),
    ("quote_then_space", lambda d: write(d / "e.csv", CLEAN_CSV + 'c3,s3,5,1,"spaced" \n'), EVENTS),
    ("blank_line", lambda d: write(d / "e.csv", CLEAN_CSV + "\nc4,s4,6,1,ok\n\n"), EVENTS),
    ("lone_cr", lambda d: write(d / "e.csv", CLEAN_CSV + "c3,s3,5,1,a\rb\n"), EVENTS),
    ("mixed_endings", lambda d: write(d / "e.csv", CLEAN_CSV + "c3,s3,5,1,ok\r\n"), EVENTS),
    ("nul_byte", lambda d: write(d / "e.csv", CLEAN_CSV + "c3,s3,5,1,a\0b\n"), EVENTS),
    ("quoted_header", lambda d: write(d / "e.csv", '"customer",sku,ts,stars,text\nc1,s1,1,5,x\n'), EVENTS),
    ("duplicate_header", lambda d: write(d / "e.csv", "customer,sku,ts,stars,text,sku\nc1,s1,1,5,x,s9\n"), EVENTS),
    ("header_only", lambda d: write(d / "e.csv", "customer,sku,ts,stars,text\n"), EVENTS),
    ("gzip", lambda d: write(d / "e.csv.gz", gzip.compress(CLEAN_CSV.encode())), EVENTS),
    ("latin1_declared", lambda d: write(d / "e.csv", CLEAN_CSV.encode("latin-1")), EVENTS),
    (
        "jsonl_lone_cr",
        lambda d: write(d / "e.jsonl", '{"customer": 1, "sku": 2}\r\n{"customer": 1, "sku": 2}\r{"customer": 3}\n'),
        PAIR,
    ),
    (
        "parquet_list_and_time",
        lambda d: parquet(
            d / "i.parquet",
            {
                "sku": pa.array([1, 2]),
                "name": pa.array([["A"], ["B", "C"]]),
                "brand": pa.array([1, 2]),
                "genres": pa.array([b"x", b"y"]),
            },
        ),
        ITEMS,
    ),
]


@pytest.mark.parametrize(("name", "make", "mapping"), REFUSED, ids=[case[0] for case in REFUSED])
def test_the_fast_path_refuses_what_it_cannot_vouch_for(tmp_path, name, make, mapping):
    path = make(tmp_path)
    labels = LABELS if mapping is ITEMS else {}
    options = {"encoding": "latin-1"} if name == "latin1_declared" else {}
    taken, fast, slow = stage_both(tmp_path, path, mapping, labels, options)
    assert taken == "rows", name
    assert fast == slow


@pytest.mark.parametrize(
    ("name", "data", "mapping"),
    [
        ("not_utf8_csv", CLEAN_CSV.encode() + b"c3,s3,5,1,caf\xe9\n", EVENTS),
        ("not_utf8_jsonl", b'{"customer": 1, "sku": 2}\n{"customer": "caf\xe9", "sku": 2}\n', EVENTS),
        ("missing_csv_column", b"customer,ts,stars,text\nc1,1,5,x\n", EVENTS),
        ("missing_jsonl_column", b'{"customer": 1, "ts": 2, "stars": 3, "text": "x"}\n', EVENTS),
        ("missing_parquet_column", None, EVENTS),
        ("not_parquet", b"PAR1 nonsense", EVENTS),
    ],
)
def test_unreadable_files_fail_the_same_way_on_both_paths(tmp_path, name, data, mapping):
    suffix = ".csv" if "csv" in name else ".jsonl" if "jsonl" in name else ".parquet"
    path = tmp_path / f"events{suffix}"
    if data is None:
        pq.write_table(pa.table({"customer": [1], "sku": ["a"]}), path)
    else:
        path.write_bytes(data)
    taken, fast, slow = stage_both(tmp_path, path, mapping)
    assert taken == "error"
    assert fast == slow and str(path) in fast


FRAGMENTS = [
    "plain", "", " ", "  two  spaces ", "semi; colon", "###", "Caf\u00e9", "Cafe\u0301", "\u00a0nbsp", "zw\u200bsp",
    "line\u2028sep", "tab\t", "\u0085nel", "emoji \U0001f600", "\ufeffbom", "han \u4e2d\u6587", "\u1100\u1161",
    "quote \" inside", "back \\ slash", "comma, inside", "12", "-3", "4.50", "1e3", "-0", "x\u0301",
]  # fmt: skip


def random_values(rng: random.Random) -> object:
    kind = rng.random()
    if kind < 0.6:
        return rng.choice(FRAGMENTS) + rng.choice(["", "", " tail", rng.choice(FRAGMENTS)])
    if kind < 0.7:
        return rng.choice([0, 7, -12, 10**20, 1.5, 2.25, 1e-7, 1e22, True, False, None])
    if kind < 0.8:
        return [rng.choice(FRAGMENTS), rng.choice([1, None, "x", 2.5])]
    if kind < 0.85:
        return {"k": rng.choice(FRAGMENTS)}
    return rng.choice(FRAGMENTS).strip()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_hostile_json_lines_stage_identically(tmp_path: Path, seed: int):
    rng = random.Random(seed)
    lines = []
    for _ in range(400):
        record = {column: random_values(rng) for column in ["sku", "name", "brand", "genres"] if rng.random() < 0.9}
        text = json.dumps(record, ensure_ascii=rng.random() < 0.5)
        lines.append(text if rng.random() < 0.95 else text[: rng.randrange(len(text) + 1)])
    taken, fast, slow = stage_both(tmp_path, jsonl(tmp_path / "items.jsonl", lines), ITEMS, LABELS)
    assert taken == "fast"
    assert fast == slow


@pytest.mark.parametrize("seed", [1, 2])
def test_random_hostile_csv_values_stage_identically(tmp_path: Path, seed: int):
    rng = random.Random(seed)
    rows = ["sku,name,brand,genres"]
    for _ in range(400):
        values = [str(random_values(rng)).replace("\t", " ").replace("\u0085", "") for _ in range(4)]
        rows.append(",".join('"' + v.replace('"', '""') + '"' if rng.random() < 0.5 or "," in v else v for v in values))
    path = write(tmp_path / "items.csv", "\n".join(rows) + "\n")
    taken, fast, slow = stage_both(tmp_path, path, ITEMS, LABELS)
    assert taken == "fast"
    assert fast == slow


def ingest_outputs(tmp_path: Path, name: str, paths: dict, options: dict) -> tuple[object, ...]:
    folder = tmp_path / name / "shop"
    result = ingest_source("shop", "generic", paths, options, folder, Limits(max_field_chars=40))
    folder = result.folder
    rejects = (folder / "rejects.jsonl").read_text(encoding="utf-8")
    tables = [pq.read_table(folder / f).to_pylist() for f in ("items.parquet", "interactions.parquet")]
    return result.items, result.interactions, dict(result.rejects), tables, rejects


def test_ingest_gives_the_same_outputs_and_rejects_on_both_paths(tmp_path, monkeypatch, caplog):
    events = write(
        tmp_path / "events.csv",
        "customer,sku,ts,stars,text\n"
        "c1,s1,1700000000,5,Great\n"
        ",s1,2,5,no user\n"
        "c1,s1,3,nan,bad rating\n"
        "c1,s1,4,7,out of range\n"
        "c1,s1,13/32/2024,4,bad date\n"
        f"c1,s1,5,4,{'x' * 60}\n"
        "c1,s2,2024-01-02,,empty rating\n"
        "c1, s2 ,6,4.5,  spaced  ids  \n",
    )
    items = jsonl(
        tmp_path / "items.jsonl",
        [
            {"sku": "s1", "name": "Trail Shoe", "brand": "Peak", "genres": ["Run", "Trail"]},
            {"sku": "s2", "name": "", "brand": "Peak"},
            {"sku": "s2", "name": "Rain Jacket", "brand": None},
            {"sku": "s1", "name": "Duplicate", "brand": "X"},
            {"sku": 3, "name": ["list"]},
            "{broken",
        ],
    )
    options = {
        "interaction_columns": EVENTS,
        "item_columns": {**ITEMS, "attributes": LABELS},
        "timestamp_unit": "s",
    }
    paths = {"items": items, "interactions": events}
    with caplog.at_level(logging.INFO, logger="recgpt.data.sources.generic"):
        fast = ingest_outputs(tmp_path, "fast", paths, options)
    assert sum("staged by the fast path" in r.getMessage() for r in caplog.records) == 2
    monkeypatch.setattr(generic, "FAST_PATH", False)
    slow = ingest_outputs(tmp_path, "slow", paths, options)
    assert fast == slow
    assert fast[0] == 2 and fast[2]["invalid_json"] == 1 and fast[2]["list_value"] == 1
    # an empty rating is no rating (implicit feedback), as readers.make_interaction reads it; not a reject
    assert [(e["item_id"], e["rating"], e["ord"]) for e in fast[3][1]] == [
        ("s1", 5.0, 2),
        ("s2", None, 8),
        ("s2", 4.5, 9),
    ]


# Lines DuckDB's read_json accepts that Python reads otherwise, or that need Python: the whole-file reader hands
# each of them to Python and still reads the file
READ_JSON_HOSTILE = [
    '{"customer": 1, "sku": 2,}',
    '{"customer": NaN, "sku": Infinity, "ts": -Infinity}',
    '{"customer": nan, "sku": 2}',
    '{"customer": -0, "sku": 2, "stars": -0.0}',
    '{"customer": "a\\u0000b", "sku": "\\u00e9t\\u00e9", "text": "tab\\tand \\"quotes\\" \\\\ \\/"}',
    '{"customer": [1, 2], "sku": 2}',
    '{"customer": {"id": 1}, "sku": 2}',
    '{"customer": 1, "sku": 2, "nested": {"stars": 9.5}, "stars": 1.50}',
    '{"customer": 1, "sku": 2, "text": "\\"stars\\": 9.5", "stars": 2.50}',
    '{"customer": 1, "sku": 2, "st\\u0061rs": 3.50}',
    '{"customer": 1, "sku": 2, "stars" : 4.50 , "ts" :1.5E3}  \t',
    '{"customer": 1, "sku": 2, "stars": 1e400, "ts": 12345678901234567890123}',
    '{"customer": 18446744073709551615, "sku": -9223372036854775808, "ts": 1.7e9, "stars": 5.0}',
    '{"customer": true, "sku": false, "ts": null}',
    '{"customer": " padded ", "sku": "s\\u00a0", "text": "a\\u2028b  c; d ### e"}',
    '{"customer": 1, "sku": 2, "deep": ' + "[" * 60 + "]" * 60 + "}",
    '{"customer": 1, "sku": 2, "deep": ' + "[" * 120 + "]" * 120 + "}",
    '{"customer": 1, "sku": 2, "deep": ' + "[" * 5000 + "]" * 5000 + "}",
    "{}",
]


def test_read_json_reads_a_whole_file_and_hands_hostile_lines_to_python(tmp_path: Path):
    path = jsonl(tmp_path / "e.jsonl", [{"customer": 1, "sku": "a", "ts": 1, "stars": 4.5}, *READ_JSON_HOSTILE])
    connection = connect(tmp_path / "spill", "1GB")
    try:
        reader = generic_fast.stage(path, {}, EVENTS, {}, tmp_path / "fast.parquet", connection)
        generic.stage_file(path, {}, EVENTS, {}, tmp_path / "rows.parquet", connection, fast=False)
    finally:
        connection.close()
    assert reader == "read_json"
    assert pq.read_table(tmp_path / "fast.parquet").to_pylist() == pq.read_table(tmp_path / "rows.parquet").to_pylist()


@pytest.mark.parametrize(
    "line",
    [
        "",
        "  ",
        "[1, 2]",
        '"just a string"',
        '{"customer": 1, "sku": 2, "sku": 3}',
        "not json",
        '{"customer": "\\ud800"}',
    ],
)
def test_what_read_json_refuses_is_read_line_by_line(tmp_path: Path, line: str):
    path = jsonl(tmp_path / "e.jsonl", [{"customer": 1, "sku": "a", "ts": 1, "stars": 4.5, "text": "x"}, line])
    connection = connect(tmp_path / "spill", "1GB")
    try:
        reader = generic_fast.stage(path, {}, EVENTS, {}, tmp_path / "fast.parquet", connection)
        generic.stage_file(path, {}, EVENTS, {}, tmp_path / "rows.parquet", connection, fast=False)
    finally:
        connection.close()
    assert reader == "json lines"
    assert pq.read_table(tmp_path / "fast.parquet").to_pylist() == pq.read_table(tmp_path / "rows.parquet").to_pylist()
