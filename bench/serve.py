"""Load benchmark of the HTTP service on 127.0.0.1: dynamic batching against batch size 1, in the same run.

N concurrent clients (aiohttp) each send ``--requests`` next-item requests (k=10, the user's 20 most recent items,
from the benchmark's test users) to ``recgpt serve``'s app running in this process, first with batching off
(``max_batch_size`` 1), then with dynamic batching (``--max-batch-size``, default 8 as in configs/serve/demo.yaml;
``max_wait_ms`` 10), on the same model and requests; each run starts after one concurrent warm-up round. Reported:
requests/s, p50 and p99 latency, failed requests (anything but 200 with real catalogue items). A third run mixes
bad requests (unknown items, empty or oversized histories, malformed JSON, wrong types) into the batched load:
each must get its 4xx and every good request still its 200.

A last case measures connection reuse: ``--keepalive-requests`` small requests that need no model call
(``GET /healthz``, and a ``POST /v1/recommend`` whose body is read, parsed and refused 422) sent one after another
on one kept-alive connection (``http.client``, as a pooled client would), against the same requests each on a new
connection; reported as p50 per request and the ratio.
Without TCP_NODELAY on the server's sockets a reused connection costs ~40 ms a request (Nagle's algorithm meets
delayed ACKs), a new one ~2 ms; with it, reuse is the cheaper of the two.

The model is the demo's architecture (bench/eval.py): the trained demo model with ``--model``, else a seeded
random initialisation. Usage::

    python bench/serve.py                       # prepares 200 users of MovieLens-100K
    python bench/serve.py --model artifacts/demo/fine-tuning/hf/huggingface/final --data artifacts/demo/data
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib.util
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_eval", ROOT / "bench" / "eval.py")
bench_eval = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(bench_eval)  # type: ignore[union-attr]


def histories(data: Path, count: int) -> list[list[str]]:
    benchmark = next((data / "benchmark").iterdir())
    from recgpt.evaluation.runner import read_rows

    rows = read_rows(benchmark / "test.jsonl")
    users = [r["history_item_ids"][-20:] for r in rows if r["task"] == "next_item"]
    return [users[i % len(users)] for i in range(count)]


def bad_requests(good: list[str]) -> list[tuple[Any, int]]:
    """(body, expected status): a body that is bytes is sent as is."""
    return [
        ({"history": ["no-such-item"], "k": 10}, 422),
        ({"history": [], "k": 10}, 422),
        ({"history": good * 20, "k": 10}, 422),  # over max_history
        (b'{"history": [', 400),
        ({"history": good, "k": "ten"}, 422),
        ({"history": [1, 2, 3]}, 422),
        (b"x" * 300_000, 413),
    ]


async def client(session: Any, url: str, jobs: list[tuple[Any, int]], catalog: set[str], out: dict[str, list]) -> None:
    for body, expected in jobs:
        start = time.perf_counter()
        if isinstance(body, bytes):
            response = await session.post(url, data=body, headers={"Content-Type": "application/json"})
        else:
            response = await session.post(url, json=body)
        payload = await response.json()
        elapsed = time.perf_counter() - start
        if expected == 200:
            ok = response.status == 200 and payload["items"] and all(i["item_id"] in catalog for i in payload["items"])
            out["latency"].append(elapsed)
            out["good_ok" if ok else "good_failed"].append(response.status)
        else:
            out["bad_ok" if response.status == expected else "bad_failed"].append((response.status, expected))


async def load(url: str, plan: list[list[tuple[Any, int]]], catalog: set[str]) -> dict[str, Any]:
    import aiohttp

    out: dict[str, list] = {"latency": [], "good_ok": [], "good_failed": [], "bad_ok": [], "bad_failed": []}
    connector = aiohttp.TCPConnector(limit=len(plan))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session, url, jobs, catalog, out) for jobs in plan))
        seconds = time.perf_counter() - start
    latency = sorted(out["latency"])
    return {
        "good": len(latency),
        "rps": len(latency) / seconds,
        "p50": statistics.median(latency),
        "p99": latency[min(len(latency) - 1, round(0.99 * (len(latency) - 1)))],
        "failed": len(out["good_failed"]),
        "bad_answered": len(out["bad_ok"]),
        "bad_wrong": out["bad_failed"],
    }


def run(recommender: Any, settings: dict[str, Any], plan: list[list[tuple[Any, int]]]) -> dict[str, Any]:
    from recgpt.serving.server import ServeConfig, running

    config = ServeConfig(model="-", catalog="-", port=0, **settings)
    catalog = set(recommender.catalog.items)
    with running(recommender, config) as base:
        warm = [[({"history": jobs[0][0]["history"], "k": 10}, 200)] for jobs in plan]  # one concurrent round
        asyncio.run(load(f"{base}/v1/recommend", warm, catalog))
        return asyncio.run(load(f"{base}/v1/recommend", plan, catalog))


def timed_requests(base: str, requests: list[tuple[str, str, Any, int]], reuse: bool) -> list[float]:
    """Seconds per request, sent in turn on one kept-alive connection (``reuse``) or each on a new one."""
    address = urlsplit(base)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    seconds = []
    for method, path, body, status in requests:
        start = time.perf_counter()
        if not reuse:
            connection.close()
            connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
        payload = None if body is None else json.dumps(body)
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        answer = connection.getresponse()
        answer.read()
        seconds.append(time.perf_counter() - start)
        if answer.status != status:
            raise RuntimeError(f"{method} {path}: {answer.status}, expected {status}")
    connection.close()
    return seconds


def keep_alive(recommender: Any, count: int, history: list[str]) -> dict[str, dict[str, float]]:
    """p50 seconds of small requests on a reused connection and on new connections, per request kind."""
    from recgpt.serving.server import ServeConfig, running

    kinds = {
        "GET /healthz": ("GET", "/healthz", None, 200),
        "POST /v1/recommend 422": ("POST", "/v1/recommend", {"history": [*history[-5:], "no-such-item"]}, 422),
    }
    results: dict[str, dict[str, float]] = {}
    with running(recommender, ServeConfig(model="-", catalog="-", port=0, max_wait_ms=0)) as base:
        for name, request in kinds.items():
            timed_requests(base, [request] * 3, reuse=True)  # warm-up
            results[name] = {
                mode: statistics.median(timed_requests(base, [request] * count, reuse=mode == "reused"))
                for mode in ("new", "reused")
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a trained HF folder (default: random init)")
    parser.add_argument("--data", type=Path, default=None, help="its prepared data (default: prepare 200 users)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=8, help="good requests per client")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--max-batch-size", type=int, default=8, help="of the batched runs (configs/serve: 8)")
    parser.add_argument("--keepalive-requests", type=int, default=50, help="per kind and connection mode")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from recgpt.serving import Catalog, Recommender

    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.data or bench_eval.prepare(Path(tempfile.mkdtemp()) / "data", 200)
    model, tokenizer = bench_eval.load(args.model, data)
    recommender = Recommender(model, tokenizer, Catalog.load(data), num_beams=10)
    pool = histories(data, args.clients * args.requests)
    plan = [
        [({"history": pool[c * args.requests + r], "k": 10}, 200) for r in range(args.requests)]
        for c in range(args.clients)
    ]
    rng = random.Random(0)
    mixed = []
    for jobs in plan:
        bad = bad_requests(jobs[0][0]["history"])
        merged = jobs + rng.sample(bad, 3)
        rng.shuffle(merged)
        mixed.append(merged)

    print(
        f"model: {args.model or 'demo architecture, random init'}; {len(recommender.catalog.items)} items; "
        f"{args.clients} clients x {args.requests} requests (k=10, 20-item histories); torch threads "
        f"{torch.get_num_threads()}"
    )
    batched = f"dynamic batching ({args.max_batch_size}, 10 ms)"
    results = {
        "batch size 1": run(recommender, {"max_batch_size": 1, "max_wait_ms": 0}, plan),
        batched: run(recommender, {"max_batch_size": args.max_batch_size, "max_wait_ms": 10}, plan),
        "dynamic batching + bad requests": run(
            recommender, {"max_batch_size": args.max_batch_size, "max_wait_ms": 10}, mixed
        ),
    }
    print(f"| {'run':<32} | {'good':>4} | {'req/s':>6} | {'p50 s':>6} | {'p99 s':>6} | {'failed':>6} | bad 4xx |")
    print(f"|{'-' * 34}|{'-' * 6}|{'-' * 8}|{'-' * 8}|{'-' * 8}|{'-' * 8}|{'-' * 9}|")
    for name, r in results.items():
        bad = (
            f"{r['bad_answered']}/{r['bad_answered'] + len(r['bad_wrong'])}"
            if r["bad_answered"] or r["bad_wrong"]
            else "-"
        )
        print(
            f"| {name:<32} | {r['good']:>4} | {r['rps']:>6.2f} | {r['p50']:>6.2f} | {r['p99']:>6.2f} | "
            f"{r['failed']:>6} | {bad:>7} |"
        )
    speedup = results[batched]["rps"] / results["batch size 1"]["rps"]
    failures = sum(r["failed"] + len(r["bad_wrong"]) for r in results.values())
    print(
        f"dynamic batching / batch size 1: {speedup:.2f}x requests/s "
        f"(target >= 3x: {'met' if speedup >= 3 else 'missed'})"
    )
    print(f"failed requests: {failures} (target 0: {'met' if failures == 0 else 'missed'})")
    for name, r in results.items():
        for got, expected in r["bad_wrong"]:
            print(f"  {name}: a bad request got {got}, expected {expected}")
    print(f"\n| {'sequential requests':<24} | {'new conn p50 ms':>15} | {'reused p50 ms':>13} | reused / new |")
    print(f"|{'-' * 26}|{'-' * 17}|{'-' * 15}|{'-' * 14}|")
    reuse = keep_alive(recommender, args.keepalive_requests, pool[0])
    for name, r in reuse.items():
        ratio = r["reused"] / r["new"]
        print(f"| {name:<24} | {r['new'] * 1000:>15.1f} | {r['reused'] * 1000:>13.1f} | {ratio:>11.2f}x |")
    worst = max(r["reused"] / r["new"] for r in reuse.values())
    print(
        f"kept-alive / new connection p50: at most {worst:.2f}x (target <= 1.5x: {'met' if worst <= 1.5 else 'missed'})"
    )


if __name__ == "__main__":
    main()
