"""Benchmark of the data pipeline: recgpt's out-of-core DuckDB engine against plain pandas, and the full prepare.

Part 1, engine against pandas: both implementations run the same steps on the same synthetic logs (interactions
with review text, and a catalogue): read, join items (dropping untitled ones), drop exact duplicate events, drop
users with fewer than 5 events, order each history by time (ties in file order), split users 99.5 / 0.5, and write
the pre-training documents and fine-tuning rows as JSON lines. Tokenizer work (chunking, MDS shards) is left out
of both.

Part 2, the full ``recgpt data prepare`` (generic adapter, 512-token documents and MDS samples, a 8192-token BPE
trained beforehand on a sample, as a real run names an existing tokenizer) on one core (1 worker, DuckDB on 1
thread) and with 1 and 2 ``workers`` (DuckDB on every core): wall time, peak RSS summed over the process tree (the
parent and its workers), interactions/s, tokens/s, the 2/1-worker and 2/1-core speed-ups, a projection to
RecGPT's 258M interactions from the one-core rate and each run's seconds per stage (from its own log); then a
profile of a 1-worker run (time per phase, and the top functions). ``--baseline DIR`` adds a row for the same
prepare run by another checkout (e.g. the previous main) in the same run.

Each measured run is its own process. Usage::

    python bench/prep.py                                 # 1M and 10M interactions, both parts (long)
    python bench/prep.py --sizes 20000 --full-sizes 20000  # a quick check that it works
    python bench/prep.py --sizes '' --full-sizes 1000000 --baseline ../recgpt-main   # part 2 only, against main
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


# The generic adapter's column map of the synthetic logs, shared by both parts of the bench.
SHOP_OPTIONS = {
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


def run_recgpt(logs: Path, out: Path) -> dict[str, int]:
    """recgpt's pipeline: DuckDB-native ingest, the engine (1 GB memory limit) and the streaming writers."""
    from recgpt.data.engine import Engine, SourcePlan
    from recgpt.data.ingest import ingest_source
    from recgpt.data.outputs import CorpusWriter, OutputSettings
    from recgpt.data.sources.readers import Limits

    paths = {"interactions": logs / "interactions.csv", "items": logs / "items.csv"}
    result = ingest_source("shop", "generic", paths, SHOP_OPTIONS, out / "work" / "shop", Limits(), "1GB")
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
    output = process.stdout.read() if process.stdout else ""  # to its end before waiting: a full pipe blocks
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{implementation} failed on {logs}")
    return {"wall_s": wall, "rss_mib": usage.ru_maxrss / 1024, **json.loads(output.strip().splitlines()[-1])}


def label(size: int) -> str:
    return f"{size // 1_000_000}M" if size % 1_000_000 == 0 else f"{size // 1000}K"


RECGPT_INTERACTIONS = 258_000_000


def write_data_config(logs: Path, out: Path, tokenizer: Path) -> Path:
    """A data config of the synthetic logs through the generic adapter (the one a new user would write)."""
    import yaml

    source = {
        "name": "shop",
        "format": "generic",
        "paths": {"interactions": str(logs / "interactions.csv"), "items": str(logs / "items.csv")},
        "options": SHOP_OPTIONS,
    }
    config = {
        "output": str(out),
        "sources": [source],
        "max_seq_len": 512,
        "memory_limit": "1GB",
        "tokenizer": {"train_vocab_size": None, "name": str(tokenizer)},
        "max_reject_fraction": 0.05,
    }
    path = logs / "data.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def train_bench_tokenizer(logs: Path, folder: Path, lines: int = 200_000) -> Path:
    """An 8192-token BPE trained on the first rows of the logs, outside every measured run."""
    import csv

    from recgpt.data.tokenizer import train_bpe_tokenizer

    with (logs / "interactions.csv").open(encoding="utf-8") as handle:
        reviews = [row["review"] for _, row in zip(range(lines), csv.DictReader(handle), strict=False)]
    with (logs / "items.csv").open(encoding="utf-8") as handle:
        titles = [f"Title: {row['title']}; Brand: {row['brand']}" for row in csv.DictReader(handle)]
    train_bpe_tokenizer(
        iter(titles + reviews + ["Rating: 1.0/5.0 2.0/5.0 3.0/5.0 4.0/5.0 5.0/5.0"] * 100), 8192, folder, 512
    )
    return folder


def process_tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants now (0 once it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):  # it ended meanwhile
            total += process.memory_info().rss
    return total


def measure_prepare(
    config: Path, workers: int | None, checkout: Path | None = None, threads: int | None = None
) -> dict[str, Any]:
    """``recgpt data prepare`` in a child process (of ``checkout`` when given): wall s, peak tree RSS, manifest.

    ``threads`` caps DuckDB's threads (ingest and engine); None leaves them at every core.
    """
    overrides = ([] if workers is None else [f"workers={workers}"]) + (
        [] if threads is None else [f"threads={threads}"]
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    started, peak = time.perf_counter(), 0
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a long log must never block the child
        process = subprocess.Popen(
            [sys.executable, "-m", "recgpt.cli", "data", "prepare", str(config), *overrides],
            cwd=checkout or Path(__file__).resolve().parents[1],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        while process.poll() is None:
            peak = max(peak, process_tree_rss(process.pid))
            time.sleep(0.1)
        wall = time.perf_counter() - started
        log.seek(0)
        text = log.read().decode(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"recgpt data prepare failed ({config}, workers={workers}):\n{text[-2000:]}")
    import yaml

    output = Path(yaml.safe_load(config.read_text())["output"])
    manifest = json.loads((output / "manifest.json").read_text())
    source = manifest["sources"]["shop"]
    return {
        "wall_s": wall,
        "rss_mib": peak / 2**20,
        "interactions": source["interactions_in"],
        "tokens": manifest["pretraining"]["tokens"],
        "documents": manifest["pretraining"]["documents"],
        "stages": stage_seconds(text),
    }


def stage_seconds(log: str) -> dict[str, float]:
    """The run's own wall seconds per stage (the line ``recgpt.data.stage_clock`` logs), or {} for a checkout
    that does not log it (an older main)."""
    from recgpt.data.stage_clock import STAGE_LOG_PREFIX

    lines = [line.split(STAGE_LOG_PREFIX, 1)[1] for line in log.splitlines() if STAGE_LOG_PREFIX in line]
    return json.loads(lines[-1]) if lines else {}


# Phases of a prepare run and the functions whose cumulative time is theirs (cProfile, one process); "~" names a
# method of a compiled extension (cProfile's "<method 'encode_batch' of ...>").
PHASES = {
    "ingest (adapter -> Parquet)": "prepare.py:_ingest",
    "engine (DuckDB clean/split/order)": "engine.py:load",
    "tokenizer (train / await loader)": "prepare.py:_tokenizer",
    "writing phase (all of it)": "writing.py:write_users",
    "  tokenize lines (LineTokens.encode)": "tokenizer.py:encode",
    "    ASCII pieces looked up (AsciiWords)": "tokenizer.py:lookup",
    "    Rust BPE (encode_batch)": "~:encode_batch",
    "  MDS shards (blocks + MDSWriter)": "corpus.py:write",
    "  render + JSON lines": "render.py:json_line",
    "  engine -> Python users": "engine.py:pretraining_users",
    "  prompt fitting (benchmark rows)": "encoding.py:fit_prompt_text",
    "leak check": "engine.py:leaked",
    "instruction shuffle": "prepare.py:shuffle_lines",
}


def profile_prepare(config: Path) -> None:
    """Print where a 1-worker prepare spends its time: per phase, then the top functions by own time."""
    import cProfile
    import io
    import pstats

    from recgpt.data.prepare import prepare
    from recgpt.data.prepare_config import load_prepare_config

    profiler = cProfile.Profile()
    profiler.enable()
    prepare(load_prepare_config(config, ["workers=1"]))
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = max(entry[3] for entry in stats.stats.values())  # type: ignore[attr-defined]
    print(f"profile of one 1-worker prepare ({total:.1f} s under cProfile, which slows Python code):")
    for phase, key in PHASES.items():
        file_name, function = key.split(":")
        spent = sum(
            entry[3]
            for (path, _, name), entry in stats.stats.items()  # type: ignore[attr-defined]
            if (name == function and path.endswith(file_name)) or (path == file_name == "~" and f"'{function}'" in name)
        )
        print(f"  {phase:<38} {spent:>8.1f} s {100 * spent / total:>5.1f}%")
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(12)
    print("top functions by own time:")
    print("\n".join(line for line in buffer.getvalue().splitlines() if line.strip())[-2200:])


def run_full(sizes: list[int], root: Path, baseline: Path | None, profile: bool = True) -> None:
    """Part 2: the full prepare on 1 core, with 1 and 2 workers (and ``baseline``'s), then the projection and a
    profile."""
    results: dict[tuple[int, str], dict[str, Any]] = {}
    for size in sizes:
        logs = root / f"full-logs-{size}"
        generate(logs, size)
        tokenizer = train_bench_tokenizer(logs, root / f"tokenizer-{size}")
        config = write_data_config(logs, root / f"full-out-{size}", tokenizer)
        if baseline is not None:
            results[size, "baseline"] = measure_prepare(config, None, baseline)
        # "1 core" is one worker with DuckDB on one thread too: the per-core rate and Amdahl's share come from it.
        results[size, "1 core"] = measure_prepare(config, 1, threads=1)
        for workers in (1, 2):
            results[size, f"{workers} worker"] = measure_prepare(config, workers)
        if profile and size == min(sizes):
            profile_prepare(config)
        shutil.rmtree(logs, ignore_errors=True)
        shutil.rmtree(root / f"full-out-{size}", ignore_errors=True)
    report_full(sizes, results)


def report_full(sizes: list[int], results: dict[tuple[int, str], dict[str, Any]]) -> None:
    """The full-prepare table, the speed-ups and the projection to RecGPT's corpus."""
    print(
        f"{'size':>6} {'recgpt data prepare':<20} {'wall s':>9} {'peak RSS MiB':>13} {'interactions/s':>15} "
        f"{'tokens/s':>12} {'tokens':>13}"
    )
    for (size, name), r in sorted(results.items()):
        print(
            f"{label(size):>6} {name:<20} {r['wall_s']:>9.1f} {r['rss_mib']:>13.0f} "
            f"{size / r['wall_s']:>15,.0f} {r['tokens'] / r['wall_s']:>12,.0f} {int(r['tokens']):>13,}"
        )
    for size in sizes:
        core, one, two = results[size, "1 core"], results[size, "1 worker"], results[size, "2 worker"]
        for other in (core, one):
            assert other["tokens"] == two["tokens"] and other["documents"] == two["documents"], "runs disagree"
        line = (
            f"at {label(size)}: 2 workers / 1 worker speed-up {one['wall_s'] / two['wall_s']:.2f}x (target >= 1.8x; "
            f"DuckDB uses both cores in both); 2 cores / 1 core {core['wall_s'] / two['wall_s']:.2f}x"
        )
        if (size, "baseline") in results:
            line += f"; 1 worker / baseline {results[size, 'baseline']['wall_s'] / one['wall_s']:.2f}x (target >= 3x)"
        print(line)
    report_stages(results)
    largest = max(sizes)
    core, two = results[largest, "1 core"], results[largest, "2 worker"]
    rate = largest / core["wall_s"]
    speedup = core["wall_s"] / two["wall_s"]
    parallel = min(1.0, max(0.0, 2 * (1 - 1 / speedup)))  # Amdahl's parallel share from the 1 -> 2 core speed-up
    single = RECGPT_INTERACTIONS / rate
    on_32 = single * ((1 - parallel) + parallel / 32)
    print(f"per core: {rate:,.0f} interactions/s -> RecGPT's 258M interactions in {single / 3600:.1f} h on one core")
    print(
        f"on 32 cores (Amdahl, parallel share {parallel:.2f} from the 1 -> 2 core speed-up): {on_32 / 3600:.2f} h; "
        f"ideal {single / 32 / 3600:.2f} h"
    )
    print(f"peak RSS at {label(largest)} with 2 workers: {two['rss_mib'] / 1024:.2f} GiB (target < 2 GiB)")


def report_stages(results: dict[tuple[int, str], dict[str, Any]]) -> None:
    """Each run's seconds per stage, as prepare logged them; "not writing" is all but the writing stage."""
    runs = [(key, r["stages"]) for key, r in sorted(results.items()) if r.get("stages")]
    if not runs:
        return
    ordered = sorted((stages for _, stages in runs), key=len, reverse=True)  # the run with every stage first
    names = [name for name in dict.fromkeys(n for stages in ordered for n in stages) if name != "total"]
    print("seconds per stage (prepare's own log; writing = the worker processes' phase, or the 1-worker writer):")
    header = " ".join(f"{name:>12}" for name in [*names, "not writing", "total"])
    print(f"{'size':>6} {'run':<10} {header}")
    for (size, run), stages in runs:
        serial = stages["total"] - stages.get("writing", 0.0)
        cells = " ".join(f"{stages.get(name, 0.0):>12.1f}" for name in names)
        print(f"{label(size):>6} {run:<10} {cells} {serial:>12.1f} {stages['total']:>12.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000", help="engine/pandas sizes (comma-separated; '' skips)")
    parser.add_argument("--full-sizes", default="1000000,10000000", help="full-prepare sizes ('' skips)")
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout to run the full prepare of")
    parser.add_argument("--no-profile", action="store_true", help="skip part 2's profile of the smallest size")
    parser.add_argument("--child", nargs=3, metavar=("IMPL", "LOGS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        implementation, logs, out = args.child
        run = run_recgpt if implementation == "recgpt" else run_pandas
        sys.stdout.write(json.dumps(run(Path(logs), Path(out))) + "\n")
        return
    sizes = [int(size) for size in args.sizes.split(",") if size]
    full_sizes = [int(size) for size in args.full_sizes.split(",") if size]
    root = Path(tempfile.mkdtemp(prefix="recgpt-bench-prep-"))
    results: dict[tuple[int, str], dict[str, float]] = {}
    try:
        # Part 1 first: a child's ru_maxrss counts the pages it had at fork, so it must start from a small parent
        # (part 2's profile runs a prepare in this process).
        for size in sizes:
            generate(root / f"logs-{size}", size)
            for implementation in ("recgpt", "pandas"):
                results[size, implementation] = measure(
                    implementation, root / f"logs-{size}", root / f"out-{size}-{implementation}"
                )
                shutil.rmtree(root / f"out-{size}-{implementation}", ignore_errors=True)
            shutil.rmtree(root / f"logs-{size}", ignore_errors=True)
        if sizes:
            report(sizes, results)
            sys.stdout.flush()
        if full_sizes:
            run_full(full_sizes, root, args.baseline, profile=not args.no_profile)
    finally:
        shutil.rmtree(root, ignore_errors=True)


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
