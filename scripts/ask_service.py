"""The demo's last step: ask a running ``recgpt serve`` for one test user's next items and a rating, over HTTP.

Usage: python scripts/ask_service.py --url http://127.0.0.1:8000 --data artifacts/demo/data [--k 10]

The user's history is their training events with ratings, then their validation event (what the service would
know before the held-out test event); the service's ``max_history`` most recent events are sent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from recgpt.evaluation.runner import read_rows


def call(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def wait_until_up(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            call(f"{url}/healthz")
            return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise SystemExit(f"the service at {url} did not come up within {seconds:.0f}s") from None
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--data", required=True, help="the prepared data folder the service serves")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-history", type=int, default=200)
    args = parser.parse_args()
    wait_until_up(args.url, 180)

    benchmark = next((Path(args.data) / "benchmark").iterdir())
    test = next(r for r in read_rows(benchmark / "test.jsonl") if r["task"] == "rating")
    user = test["user_id"]
    train = next(r for r in read_rows(benchmark / "train.jsonl") if r["user_id"] == user)
    validation = next(
        r for r in read_rows(benchmark / "validation.jsonl") if r["user_id"] == user and r["task"] == "rating"
    )
    events = [{"item_id": i, "rating": r} for i, r in zip(train["item_ids"], train["ratings"], strict=True)]
    events.append({"item_id": validation["target_item_id"], "rating": validation["target_rating"]})
    history = events[-args.max_history :]

    seen = sorted({event["item_id"] for event in events})  # the history sent is a window; exclude every seen item
    found = call(f"{args.url}/v1/recommend", {"history": history, "k": args.k, "exclude": seen})["items"]
    held_out = test["target_item_id"]
    print(f"POST {args.url}/v1/recommend")
    print(f"Top-{args.k} for user {user} ({len(history)} items in history):")
    for rank, item in enumerate(found, start=1):
        mark = "  <- the user's held-out next item" if item["item_id"] == held_out else ""
        print(f"{rank:>3}. {item['title']}  [{item['item_id']}]  (score {item['score']:.3f}){mark}")
    rated = call(f"{args.url}/v1/rating", {"history": history, "item_id": held_out})
    names = {item["item_id"]: item["title"] for item in read_rows(benchmark / "items.jsonl")}
    print(f"Held-out next item: {names.get(held_out, held_out)} [{held_out}]")
    print(f"POST {args.url}/v1/rating: predicted {rated['rating']:.2f}, actual {test['target_rating']:.1f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
