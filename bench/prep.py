"""Benchmark of the data pipeline's heavy steps: recgpt's out-of-core DuckDB engine against plain pandas.

Both implementations run the same steps on the same synthetic logs (interactions with review text, and a
catalogue): read, join items (dropping untitled ones), drop exact duplicate events, drop users with fewer than
5 events, order each history by time (ties in file order), split users 99.5 / 0.5, and write the pre-training
documents and fine-tuning rows as JSON lines. Tokenizer work (chunking, MDS shards) is left out of both.

Each implementation runs in its own process, so its peak RSS is its own; the table reports wall time, peak
RSS and interactions/s, and the ratios the targets are stated in. Usage::

    python bench/prep.py                       # 1M and 10M interactions (about 15 minutes on 2 cores)
    python bench/prep.py --sizes 100000        # a quick run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "great",
    "fast",
    "cheap",
    "broken",
    "lovely",
    "slow",
    "sturdy",
    "soft",
    "loud",
    "quiet",
    "bright",
    "dull",
    "fresh",
    "stale",
    "light",
    "heavy",
    "simple",
    "clever",
    "gentle",
    "rough",
    "smooth",
    "tiny",
    "huge",
    "warm",
    "cold",
    "sweet",
    "bitter",
    "crisp",
    "shiny",
    "plain",
    "fancy",
    "handy",
    "useless",
    "perfect",
    "awful",
    "decent",
    "solid",
    "flimsy",
    "elegant",
    "clunky",
    "reliable",
    "noisy",
    "comfy",
    "tight",
    "loose",
    "neat",
    "messy",
    "happy",
)


def generate(folder: Path, interactions: int, seed: int = 7) -> None:
    """Synthetic logs written by DuckDB: ~20 events per user, ~50 per item, reviews of 8-20 words, 1% untitled
    items, ~1% duplicated events and a tail of users with fewer than 5 events."""
    import duckdb

    folder.mkdir(parents=True, exist_ok=True)
    users, items = max(1, interactions // 20), max(10, interactions // 50)
    words = "[" + ", ".join(f"'{w}'" for w in WORDS) + "]"
    connection = duckdb.connect()
    connection.execute(f"SELECT setseed({seed / 100})")
    connection.execute(f"""COPY (
        SELECT 'i' || i AS item_id, CASE WHEN i % 100 = 7 THEN '' ELSE 'Product ' || i || ' ' || {words}[1 + i % 50] END
               AS title, 'Brand' || (i % 997) AS brand
        FROM range({items}) t(i)) TO '{folder / "items.csv"}' (HEADER)""")
    connection.execute(f"""COPY (
        SELECT 'u' || (hash(i) % {users}) AS user_id, 'i' || (hash(i * 7 + 1) % {items}) AS item_id,
               1600000000 + (i // 3) AS ts, 1 + hash(i * 13) % 5 AS rating,
               array_to_string(list_transform(range(CAST(8 + hash(i * 5) % 13 AS BIGINT)),
                               lambda x: {words}[CAST(1 + hash(i * 31 + x) % 50 AS BIGINT)]), ' ') AS review
        FROM range({interactions}) t(i)
        UNION ALL
        SELECT 'u' || (hash(i) % {users}), 'i' || (hash(i * 7 + 1) % {items}), 1600000000 + (i // 3),
               1 + hash(i * 13) % 5,
               array_to_string(list_transform(range(CAST(8 + hash(i * 5) % 13 AS BIGINT)),
                               lambda x: {words}[CAST(1 + hash(i * 31 + x) % 50 AS BIGINT)]), ' ')
        FROM range({interactions}) t(i) WHERE i % 100 = 0
        ) TO '{folder / "interactions.csv"}' (HEADER)""")


def run_recgpt(logs: Path, out: Path) -> dict[str, int]:
    """recgpt's pipeline: DuckDB-native ingest, the engine (1 GB memory limit) and the streaming writers."""
    from recgpt.data.engine import Engine, SourcePlan
    from recgpt.data.ingest import ingest_source
    from recgpt.data.outputs import CorpusWriter, OutputSettings
    from recgpt.data.sources.readers import Limits

    options = {
        "interaction_columns": {
            "user_id": "user_id",
            "item_id": "item_id",
            "timestamp": "ts",
            "rating": "rating",
            "review": "review",
        },
        "item_columns": {"item_id": "item_id", "title": "title", "attributes": {"Brand": "brand"}},
        "domain": {"name": "shop", "noun": "products", "identifying": ["Brand"]},
    }
    paths = {"interactions": logs / "interactions.csv", "items": logs / "items.csv"}
    result = ingest_source("shop", "generic", paths, options, out / "work" / "shop", Limits(), "1GB")
    engine = Engine(out / "work" / "db", memory_limit="1GB")
    engine.load([SourcePlan("shop", result.folder, result.domain)], 5, 0.005, 17)
    writer = CorpusWriter(out, {"shop": result.domain}, OutputSettings(max_seq_len=None))
    for source, user, lines, orders in engine.pretraining():
        writer.write_pretraining_user(source, user, lines, orders)
    for history in engine.histories():
        writer.write(history)
    writer.close()
    engine.close()
    return {"events": engine.counts["shop"]["interactions_out"], "users": engine.counts["shop"]["users"]}


def run_pandas(logs: Path, out: Path) -> dict[str, int]:
    """The same steps in pandas, in memory, rendering lines with vectorized string operations."""
    import pandas as pd

    items = pd.read_csv(logs / "items.csv", dtype=str, keep_default_na=False)
    events = pd.read_csv(
        logs / "interactions.csv", dtype={"user_id": str, "item_id": str, "review": str}, keep_default_na=False
    )
    events["ord"] = range(len(events))
    items = items[items["title"].str.strip() != ""].drop_duplicates("item_id")
    events = events.merge(items, on="item_id", how="inner")
    events = events.drop_duplicates(["user_id", "item_id", "ts", "rating", "review"], keep="first")
    events = events[events.groupby("user_id")["user_id"].transform("size") >= 5]
    events = events.sort_values(["user_id", "ts", "ord"], kind="stable")
    review = events["review"].str.replace(r"[ \t\n\r\f\v]+", " ", regex=True).str.strip()
    events["line"] = (
        "Title: "
        + events["title"]
        + "; Brand: "
        + events["brand"]
        + "; Review: "
        + review
        + "; Rating: "
        + events["rating"].map("{:.1f}/5.0".format)
    )
    events["text"] = "Title: " + events["title"] + "; Brand: " + events["brand"]
    users = events["user_id"].drop_duplicates()
    finetune = set(
        users[users.map(lambda u: int(hashlib.md5(f"17|shop|{u}".encode()).hexdigest(), 16) % 1_000_000 < 5000)]
    )
    header = "Given the interaction history of a user with products as follows:\n"
    out.mkdir(parents=True, exist_ok=True)
    with (
        (out / "corpus.jsonl").open("w", encoding="utf-8") as corpus,
        (out / "instruct.jsonl").open("w", encoding="utf-8") as instruct,
    ):
        for user, group in events.groupby("user_id", sort=True):
            lines, texts = group["line"].tolist(), group["text"].tolist()
            if user in finetune:
                prompt = "Predict the next item.\n" + header + "\n" + "\n".join(texts[:-1])
                instruct.write(json.dumps({"prompt": prompt, "response": texts[-1]}, ensure_ascii=False) + "\n")
            else:
                corpus.write(json.dumps({"text": header + "\n".join(lines)}, ensure_ascii=False) + "\n")
    return {"events": len(events), "users": len(users)}


def measure(implementation: str, logs: Path, out: Path) -> dict[str, float]:
    """Run one implementation in a child process; wall seconds, peak RSS (MiB) and its counts."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", implementation, str(logs), str(out)], stdout=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    output = process.stdout.read() if process.stdout else ""
    if status != 0:
        raise SystemExit(f"{implementation} failed on {logs}")
    return {"wall_s": wall, "rss_mib": usage.ru_maxrss / 1024, **json.loads(output.strip().splitlines()[-1])}


def label(size: int) -> str:
    return f"{size // 1_000_000}M" if size % 1_000_000 == 0 else f"{size // 1000}K"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated interaction counts")
    parser.add_argument("--child", nargs=3, metavar=("IMPL", "LOGS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        implementation, logs, out = args.child
        run = run_recgpt if implementation == "recgpt" else run_pandas
        sys.stdout.write(json.dumps(run(Path(logs), Path(out))) + "\n")
        return
    sizes = [int(size) for size in args.sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="recgpt-bench-prep-"))
    results: dict[tuple[int, str], dict[str, float]] = {}
    try:
        for size in sizes:
            generate(root / f"logs-{size}", size)
            for implementation in ("recgpt", "pandas"):
                results[size, implementation] = measure(
                    implementation, root / f"logs-{size}", root / f"out-{size}-{implementation}"
                )
                shutil.rmtree(root / f"out-{size}-{implementation}", ignore_errors=True)
            shutil.rmtree(root / f"logs-{size}", ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(sizes, results)


def report(sizes: list[int], results: dict[tuple[int, str], dict[str, float]]) -> None:
    """Print the table, the ratios and which targets hold."""
    columns = ("wall s", "peak RSS MiB", "interactions/s", "events kept")
    print(f"{'size':>6} {'implementation':<15} " + " ".join(f"{c:>14}" for c in columns))
    for size in sizes:
        for implementation in ("recgpt", "pandas"):
            r = results[size, implementation]
            print(
                f"{label(size):>6} {implementation:<15} {r['wall_s']:>14.1f} {r['rss_mib']:>14.0f} "
                f"{size / r['wall_s']:>14,.0f} {int(r['events']):>14,}"
            )
    for size in sizes:
        ours, theirs = results[size, "recgpt"], results[size, "pandas"]
        assert ours["events"] == theirs["events"], "the two implementations kept different events"
        print(
            f"throughput recgpt / pandas at {label(size)}: {theirs['wall_s'] / ours['wall_s']:.2f}x "
            f"(target >= 3x: {'holds' if theirs['wall_s'] / ours['wall_s'] >= 3 else 'misses'})"
        )
    largest = max(sizes)
    rss = results[largest, "recgpt"]["rss_mib"] / 1024
    print(f"recgpt peak RSS at {label(largest)}: {rss:.2f} GiB (target < 2 GiB: {'holds' if rss < 2 else 'misses'})")
    if len(sizes) > 1:
        smallest = min(sizes)
        scale = results[largest, "recgpt"]["wall_s"] / results[smallest, "recgpt"]["wall_s"]
        print(
            f"recgpt time({label(largest)}) / time({label(smallest)}): {scale:.1f} "
            f"(target <= 12: {'holds' if scale <= 12 else 'misses'})"
        )


if __name__ == "__main__":
    main()
