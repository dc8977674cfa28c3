"""One request never fails its neighbours: too-long requests are refused before batching, failed batches split."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from recgpt.data.records import Item
from recgpt.serving import Catalog, Recommender
from recgpt.serving.server import ServeConfig, running

# A real review of about 450 characters: with its item line it is over the tiny model's 256-token context.
LONG_REVIEW = (
    "I went in expecting a quiet drama and came out having watched something far stranger and better. The first "
    "hour drifts between the two brothers and their failing farm, and the photography of the wheat fields at dusk "
    "is worth the ticket alone; then the letter arrives and the film turns into a slow, patient thriller about "
    "debts, pride and what families owe each other. The ending divided our row, but I have not stopped thinking "
    "about it since. Four stars, nearly five."
)


def config(**values) -> ServeConfig:
    return ServeConfig(model="unused", catalog="unused", port=0, **values)


def post_all(url: str, bodies: list[tuple[str, dict]]) -> list[requests.Response]:
    """Send every request at once, from its own thread, so that they meet in one batch."""
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda b: requests.post(f"{url}{b[0]}", json=b[1], timeout=300), bodies))


def batch_sizes(url: str, kind: str) -> tuple[float, float]:
    """(model calls, requests in them) of ``kind`` from /metrics."""
    lines = requests.get(f"{url}/metrics", timeout=10).text.splitlines()

    def value(name: str) -> float:
        return float(next(m for m in lines if m.startswith(f'{name}{{kind="{kind}"}}')).split()[-1])

    return value("recgpt_batch_size_count"), value("recgpt_batch_size_sum")


def test_a_too_long_review_is_answered_422_and_the_other_ratings_of_its_batch_are_unchanged(recommender):
    good = [(["50", {"item_id": "181", "rating": 4.0}], item, None) for item in ("1", "174", "172", "100", "7")]
    good.append((["50"], "1", "Short and sweet."))
    bodies = [("/v1/rating", {"history": h, "item_id": i, **({"review": r} if r else {})}) for h, i, r in good]
    hostile = ("/v1/rating", {"history": ["50", "181"], "item_id": "174", "review": LONG_REVIEW})
    # the six good requests fill one batch at once; the hostile one is refused before it could join it
    with running(recommender, config(max_batch_size=6, max_wait_ms=30_000)) as url:
        answers = post_all(url, [*bodies[:3], hostile, *bodies[3:]])
        assert batch_sizes(url, "rating") == (1.0, 6.0)
    refused = answers.pop(3)
    assert refused.status_code == 422, refused.text
    assert list(refused.json()) == ["error"]
    message = refused.json()["error"]
    budget = recommender.rating_budget
    assert (
        message.startswith("review: ")
        and f"over the {budget} tokens the model's context of 256 tokens leaves" in message
    )
    assert "shorten the review to at most" in message
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    for answer, (history, item_id, review) in zip(answers, good, strict=True):
        alone = recommender.predict_rating(history, item_id, review)
        assert answer.json()["item_id"] == item_id
        assert answer.json()["rating"] == pytest.approx(alone.rating, abs=1e-4)


def test_a_long_history_is_fitted_as_in_training_and_an_item_that_cannot_fit_is_answered_422(recommender):
    """A catalogue with one very long title: a history ending in it cannot fit; a 200-event history can."""
    tokenizer = recommender.tokenizer
    title = "The Extraordinary Adventures"
    while len(tokenizer(f"Title: {title}")["input_ids"]) < 125:
        title += " of Star Wars and the Toy Story"
    items = {**recommender.catalog.items, "long": Item("long", title)}
    wide = Recommender(recommender.model, tokenizer, Catalog(recommender.catalog.domain, items), num_beams=6)
    assert wide.next_item_budget < len(tokenizer(wide.next_item_prompt(["long"]))["input_ids"])
    ids = [i for i in list(recommender.catalog.items)[:40] if i != "long"]
    good = [[ids[n], ids[n + 1]] for n in range(5)] + [(ids * 5)[:200]]
    hostile = ["50", "long"]
    with running(wide, config(max_batch_size=6, max_wait_ms=30_000)) as url:
        answers = post_all(url, [("/v1/recommend", {"history": h, "k": 3}) for h in [*good[:2], hostile, *good[2:]]])
        assert batch_sizes(url, "recommend") == (1.0, 6.0)
    refused = answers.pop(2)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"].startswith("history[1].item_id: a prompt holding only item 'long' is ")
    assert f"over the {wide.next_item_budget} that the model's context of 256 tokens leaves" in refused.json()["error"]
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    for answer, history in zip(answers, good, strict=True):
        assert [i["item_id"] for i in answer.json()["items"]] == [r.item_id for r in wide.recommend(history, k=3)]


class Poisoned:
    """A recommender whose model call fails for any batch holding item 13 (a fault no check could foresee)."""

    def __init__(self, inner: Recommender) -> None:
        self.inner, self.calls, self.lock = inner, [], threading.Lock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def recommend_batch(self, histories, **kwargs):
        with self.lock:
            self.calls.append(len(histories))
        if any("13" in history for history in histories):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.inner.recommend_batch(histories, **kwargs)


def test_a_failing_batch_is_answered_one_by_one_so_only_the_failing_request_gets_500(recommender):
    poisoned = Poisoned(recommender)
    histories = [["50", "1"], ["181"], ["50", "13"], ["172", "174"], ["7"], ["100", "50"], ["1", "2", "181"]]
    with running(poisoned, config(max_batch_size=7, max_wait_ms=30_000)) as url:  # type: ignore[arg-type]
        answers = post_all(url, [("/v1/recommend", {"history": h, "k": 3}) for h in histories])
        metrics = requests.get(f"{url}/metrics", timeout=10).text
    assert poisoned.calls == [7, 1, 1, 1, 1, 1, 1, 1]  # the batch, then each request alone
    failed = answers.pop(2)
    assert failed.status_code == 500
    assert failed.json() == {"error": "internal error (RuntimeError); the server log has the details"}
    assert 'recgpt_requests_total{endpoint="/v1/recommend",status="500"} 1.0' in metrics
    histories.pop(2)
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    for answer, history in zip(answers, histories, strict=True):
        assert [i["item_id"] for i in answer.json()["items"]] == [
            r.item_id for r in recommender.recommend(history, k=3)
        ]
