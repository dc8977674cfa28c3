"""The HTTP service on 127.0.0.1: answers, batching, bad requests, overload, authentication, metrics, web page."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from recgpt.serving.server import ServeConfig, build_app, running

HISTORY = ["50", {"item_id": "181", "rating": 4.0}, "172"]


def config(**values) -> ServeConfig:
    return ServeConfig(model="unused", catalog="unused", port=0, **values)


@pytest.fixture(scope="module")
def url(recommender):
    with running(recommender, config(max_wait_ms=50, num_beams=6)) as base:
        yield base


def test_recommend_and_rating_answer_with_real_catalogue_items(url: str, recommender):
    answer = requests.post(f"{url}/v1/recommend", json={"history": HISTORY, "k": 4}, timeout=60)
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [i["item_id"] for i in items] == [r.item_id for r in recommender.recommend(HISTORY, k=4)]
    assert all(recommender.catalog.items[i["item_id"]].title == i["title"] for i in items)
    rated = requests.post(f"{url}/v1/rating", json={"history": HISTORY, "item_id": "174"}, timeout=60)
    assert rated.status_code == 200, rated.text
    assert rated.json()["rating"] == pytest.approx(recommender.predict_rating(HISTORY, "174").rating, abs=1e-4)
    found = requests.get(f"{url}/v1/items", params={"query": "star wars"}, timeout=10).json()
    assert {"item_id": "50", "title": "Star Wars (1977)", "text": "Title: Star Wars (1977)"} in found
    health = requests.get(f"{url}/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["items"] == len(recommender.catalog.items)


def test_concurrent_requests_share_model_calls_and_get_their_own_answers(url: str, recommender):
    histories = [[item_id, "50"] for item_id in list(recommender.catalog.items)[1:25]]
    with ThreadPoolExecutor(12) as pool:
        answers = list(
            pool.map(
                lambda h: requests.post(f"{url}/v1/recommend", json={"history": h, "k": 3}, timeout=120), histories
            )
        )
    assert [a.status_code for a in answers] == [200] * len(histories)
    alone = recommender.recommend_batch(histories, k=3)
    for answer, expected in zip(answers, alone, strict=True):
        assert [i["item_id"] for i in answer.json()["items"]] == [e.item_id for e in expected]
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    count = float(
        next(m for m in metrics.splitlines() if m.startswith('recgpt_batch_size_count{kind="recommend"}')).split()[-1]
    )
    total = float(
        next(m for m in metrics.splitlines() if m.startswith('recgpt_batch_size_sum{kind="recommend"}')).split()[-1]
    )
    assert total / count > 1.5, "concurrent requests were not batched"
    assert 'recgpt_requests_total{endpoint="/v1/recommend",status="200"}' in metrics
    assert "recgpt_request_seconds_bucket" in metrics and "recgpt_queue_depth" in metrics


BAD = [
    ("/v1/recommend", {"history": []}, 422, "history: empty"),
    ("/v1/recommend", {"history": ["99999"]}, 422, "history[0].item_id: unknown item '99999'"),
    ("/v1/recommend", {"history": [50]}, 422, "history[0]: expected an item id (a string) or an object"),
    ("/v1/recommend", {"history": "50"}, 422, 'history: expected a list, got "50"'),
    ("/v1/recommend", {"history": ["50"] * 201}, 422, "history: 201 events; at most 200"),
    ("/v1/recommend", {"history": ["50"], "k": 0}, 422, "k: expected a whole number from 1 to 50"),
    ("/v1/recommend", {"history": ["50"], "k": "ten"}, 422, 'k: expected a whole number, got "ten"'),
    ("/v1/recommend", {"histroy": ["50"]}, 422, "history: required; histroy: unknown field"),
    ("/v1/recommend", {"history": [{"item_id": "50", "rating": 9}]}, 422, "history[0].rating: expected a number"),
    ("/v1/recommend", {"history": [{"item_id": "50", "stars": 3}]}, 422, "history[0].stars: unknown field"),
    ("/v1/recommend", [1, 2], 422, "body: expected a JSON object, got [1, 2]"),
    ("/v1/recommend", {"history": ["50"], "exclude": ["nope"]}, 422, "exclude[0]: unknown item 'nope'"),
    ("/v1/rating", {"history": ["50"]}, 422, "item_id: required"),
    ("/v1/rating", {"history": ["50"], "item_id": "nope"}, 422, "item_id: unknown item 'nope'"),
    ("/v1/rating", {"history": ["50"], "item_id": "1", "review": 5}, 422, "review: expected a string, got 5"),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD, ids=[b[3][:40] for b in BAD])
def test_bad_requests_get_a_4xx_that_says_what_to_fix(url: str, path, body, status, message):
    answer = requests.post(f"{url}{path}", json=body, timeout=30)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]


def test_malformed_and_huge_bodies_are_refused_and_the_service_stays_up(url: str):
    broken = requests.post(f"{url}/v1/recommend", data='{"history": [', headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]
    declared = requests.post(f"{url}/v1/recommend", data=b"x" * 300_000, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and "over 262144 bytes" in declared.json()["error"]

    def streamed():  # chunked: no Content-Length to check up front
        yield b'{"history": ['
        for _ in range(60_000):
            yield b'"50", '
        yield b'"50"]}'

    chunked = requests.post(f"{url}/v1/recommend", data=streamed(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert requests.post(f"{url}/v1/recommend", json={"history": ["50"], "k": 2}, timeout=60).status_code == 200


def test_openapi_schema_describes_the_api(url: str):
    schema = requests.get(f"{url}/openapi.json", timeout=10).json()
    assert {"/v1/recommend", "/v1/rating", "/v1/items", "/healthz", "/metrics"} <= set(schema["paths"])
    recommend = schema["paths"]["/v1/recommend"]["post"]
    assert {"200", "422", "503"} <= set(recommend["responses"])
    assert "RecommendRequest" in schema["components"]["schemas"]


class Gate:
    """A recommender whose model calls wait until the test opens the gate."""

    def __init__(self, inner) -> None:
        self.inner, self.open, self.entered = inner, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def recommend_batch(self, histories, **kwargs):
        self.entered.set()
        self.open.wait(60)
        return self.inner.recommend_batch(histories, **kwargs)


def test_a_full_queue_answers_503_at_once_and_then_serves_the_rest(recommender):
    gate = Gate(recommender)
    with running(gate, config(max_queue=2, max_batch_size=1, max_wait_ms=0)) as base:  # type: ignore[arg-type]
        post = lambda: requests.post(f"{base}/v1/recommend", json={"history": ["50"], "k": 2}, timeout=60)  # noqa: E731
        with ThreadPoolExecutor(8) as pool:
            first = pool.submit(post)
            assert gate.entered.wait(30)  # the model is busy with the first request
            waiting = [pool.submit(post) for _ in range(2)]
            while requests.get(f"{base}/healthz", timeout=10).json()["queue"] < 2:
                pass
            refused = [post() for _ in range(3)]
            gate.open.set()
            served = [first.result(), *(w.result() for w in waiting)]
        metrics = requests.get(f"{base}/metrics", timeout=10).text
    assert 'recgpt_requests_total{endpoint="/v1/recommend",status="503"} 3.0' in metrics
    assert [r.status_code for r in refused] == [503] * 3
    assert refused[0].headers["Retry-After"] == "1" and "busy" in refused[0].json()["error"]
    assert [r.status_code for r in served] == [200] * 3


def test_api_key_guards_the_api_but_not_health(recommender, monkeypatch):
    monkeypatch.setenv("RECGPT_TEST_KEY", "s3cret")
    with running(recommender, config(api_key_env="RECGPT_TEST_KEY")) as base:
        body = {"history": ["50"], "k": 2}
        assert requests.post(f"{base}/v1/recommend", json=body, timeout=60).status_code == 401
        wrong = requests.post(f"{base}/v1/recommend", json=body, headers={"Authorization": "Bearer nope"}, timeout=60)
        assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
        bearer = requests.post(
            f"{base}/v1/recommend", json=body, headers={"Authorization": "Bearer s3cret"}, timeout=60
        )
        assert bearer.status_code == 200
        header = requests.post(
            f"{base}/v1/rating", json={"history": ["50"], "item_id": "181"}, headers={"X-API-Key": "s3cret"}
        )
        assert header.status_code == 200
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
    monkeypatch.delenv("RECGPT_TEST_KEY")
    with pytest.raises(ValueError, match="RECGPT_TEST_KEY is not set"):
        build_app(recommender, config(api_key_env="RECGPT_TEST_KEY"))


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def click_when_settled(browser, css: str) -> bool:
    """Click the element once the search results stop being redrawn (each keystroke redraws them)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        browser.find_element(By.CSS_SELECTOR, css).click()
        return True
    except (NoSuchElementException, StaleElementReferenceException):
        return False


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver are not installed (make test does)"
)
def test_a_person_builds_a_history_on_the_web_page_and_sees_scored_recommendations(
    url: str, recommender, tmp_path: Path
):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        assert browser.find_element(By.ID, "recommend").get_attribute("disabled") is not None
        search = browser.find_element(By.ID, "query")
        for query, item_id in (("star wars", "50"), ("toy story", "1")):
            search.clear()
            search.send_keys(query)
            selector = f'#results button[data-item-id="{item_id}"]'
            wait.until(lambda b, css=selector: click_when_settled(b, css))
        assert browser.find_element(By.ID, "count").text == "2"
        k = browser.find_element(By.ID, "k")
        k.clear()
        k.send_keys("5")
        browser.find_element(By.ID, "recommend").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#recommendations tbody tr")) > 0)
        rows = browser.find_elements(By.CSS_SELECTOR, "#recommendations tbody tr")
        shown = [row.get_attribute("data-item-id") for row in rows]
        assert shown == [r.item_id for r in recommender.recommend(["50", "1"], k=5)]
        first = rows[0].find_elements(By.TAG_NAME, "td")
        assert first[1].text == recommender.catalog.items[shown[0]].title
        assert float(first[2].text) < 0  # a log-probability score
        assert browser.find_element(By.ID, "error").text == ""
        k.clear()
        k.send_keys("999")  # refused by the service: the old rows go, the error shows
        browser.find_element(By.ID, "recommend").click()
        wait.until(lambda b: b.find_element(By.ID, "error").text != "")
        assert browser.find_element(By.ID, "error").text == "k: expected a whole number from 1 to 50"
        assert browser.find_elements(By.CSS_SELECTOR, "#recommendations tbody tr") == []
    finally:
        browser.quit()
