"""Every error is {"error": ...}; no value is coerced; the API key's forms; warnings and offline docs."""

from __future__ import annotations

import logging
import re

import pytest
import requests

from recgpt.serving.server import ServeConfig, is_loopback, running

KEY = "s3cret"
JSON = {"content-type": "application/json"}
AUTH = {"Authorization": f"Bearer {KEY}"}


def config(**values) -> ServeConfig:
    return ServeConfig(model="unused", catalog="unused", port=0, **values)


@pytest.fixture(scope="module")
def url(recommender):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECGPT_ERRORS_KEY", KEY)
        with running(recommender, config(api_key_env="RECGPT_ERRORS_KEY", max_k=20)) as base:
            yield base


# (method, path, request keywords, status, the exact error or a regular expression it must match)
CASES = [
    ("GET", "/nowhere", {}, 404, 'no route "/nowhere"; the routes are listed at /docs and /openapi.json'),
    ("GET", "/redoc", {}, 404, 'no route "/redoc"; the routes are listed at /docs and /openapi.json'),
    ("GET", "/v1/recommend", {"headers": AUTH}, 405, 'GET is not allowed on "/v1/recommend"; use POST'),
    ("PUT", "/healthz", {}, 405, 'PUT is not allowed on "/healthz"; use GET'),
    (
        "POST",
        "/v1/recommend",
        {"data": '{"history": [', "headers": {**AUTH, **JSON}},
        400,
        r"the body is not valid JSON",
    ),
    ("POST", "/v1/rating", {"data": b'{"history": ["\xff"]}', "headers": {**AUTH, **JSON}}, 400, r"not valid JSON"),
    (
        "POST",
        "/v1/recommend",
        {"data": '{"history": ["50"]}', "headers": {**AUTH, "content-type": "text/plain"}},
        415,
        "the body must be JSON: send it with 'Content-Type: application/json' (Content-Type 'text/plain')",
    ),
    ("POST", "/v1/recommend", {"headers": AUTH}, 415, r"send it with 'Content-Type: application/json' \(no Content"),
    ("POST", "/v1/recommend", {"json": {"history": ["50"], "k": True}}, 422, "k: expected a whole number, got true"),
    ("POST", "/v1/recommend", {"json": {"history": ["50"], "k": "5"}}, 422, 'k: expected a whole number, got "5"'),
    ("POST", "/v1/recommend", {"json": {"history": ["50"], "k": 5.0}}, 422, "k: expected a whole number, got 5.0"),
    ("POST", "/v1/recommend", {"json": {"history": ["50"], "k": 21}}, 422, "k: expected a whole number from 1 to 20"),
    (
        "POST",
        "/v1/recommend",
        {"json": {"history": ["50"], "exclude_seen": "yes"}},
        422,
        'exclude_seen: expected true or false, got "yes"',
    ),
    (
        "POST",
        "/v1/recommend",
        {"json": {"history": ["50"], "exclude_seen": 1}},
        422,
        "exclude_seen: expected true or false, got 1",
    ),
    (
        "POST",
        "/v1/rating",
        {"json": {"history": [{"item_id": "50", "rating": "4"}], "item_id": "1"}},
        422,
        'history[0].rating: expected a number, got "4"',
    ),
    (
        "POST",
        "/v1/rating",
        {"json": {"history": [{"item_id": "50", "rating": True}], "item_id": "1"}},
        422,
        "history[0].rating: expected a number, got true",
    ),
    ("POST", "/v1/rating", {"json": {"history": ["50"], "item_id": 1}}, 422, "item_id: expected a string, got 1"),
    (
        "POST",
        "/v1/recommend",
        {"json": {"history": ["50"], "exclude": [181]}},
        422,
        "exclude[0]: expected a string, got 181",
    ),
    ("GET", "/v1/items?limit=ten", {}, 422, 'query.limit: expected a whole number, got "ten"'),
    ("POST", "/v1/recommend", {"json": {"history": ["50"]}, "headers": {}}, 401, "missing API key; send 'Auth"),
    (
        "POST",
        "/v1/recommend",
        {"json": {"history": ["50"]}, "headers": {"Authorization": KEY}},
        401,
        "the Authorization header has no Bearer scheme; send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
    ),
    (
        "POST",
        "/v1/recommend",
        {"json": {"history": ["50"]}, "headers": {"Authorization": f"Basic {KEY}"}},
        401,
        "the Authorization header has no Bearer scheme; send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
    ),
    (
        "POST",
        "/v1/recommend",
        {"json": {"history": ["50"]}, "headers": {"Authorization": "Bearer nope"}},
        401,
        "wrong API key; send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
    ),
    (
        "GET",
        "/v1/nowhere",
        {"headers": {}},
        401,
        "missing API key; send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
    ),
    ("GET", "/v1/nowhere", {"headers": AUTH}, 404, 'no route "/v1/nowhere"; the routes are listed at /docs'),
    (
        "POST",
        "/v1/recommend",
        {"data": b"x" * 300_000, "headers": {**AUTH, **JSON}},
        413,
        "the request body is over 262144 bytes (max_body_bytes); send a shorter history",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "options", "status", "error"), CASES, ids=[f"{c[3]}-{c[4][:30]}" for c in CASES]
)
def test_every_error_is_a_json_object_with_one_error_field(url: str, method, path, options, status, error):
    options = {"headers": AUTH, **options}
    answer = requests.request(method, f"{url}{path}", timeout=30, allow_redirects=False, **options)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert list(answer.json()) == ["error"]
    message = answer.json()["error"]
    assert message == error or re.search(error, message) or message.startswith(error), message


def test_the_bearer_scheme_is_case_insensitive_and_x_api_key_works(url: str):
    body = {"history": ["50"], "k": 2}
    for header in ({"Authorization": f"bearer {KEY}"}, {"Authorization": f"BEARER  {KEY}"}, {"X-API-Key": KEY}):
        answer = requests.post(f"{url}/v1/recommend", json=body, headers=header, timeout=60)
        assert answer.status_code == 200, (header, answer.text)
    refused = requests.post(f"{url}/v1/recommend", json=body, timeout=60)
    assert refused.headers["WWW-Authenticate"] == "Bearer"


def test_docs_are_one_self_contained_page(url: str):
    answer = requests.get(f"{url}/docs", timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    page = answer.text
    assert "<script" not in page and not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "POST /v1/recommend" in page and "POST /v1/rating" in page and "RecommendRequest" in page
    assert 'href="/openapi.json"' in page


def test_listening_beyond_loopback_without_a_key_warns(recommender, caplog, monkeypatch):
    warning = "listening on 0.0.0.0 without an API key: anyone who can reach this port can use the API"
    with (
        caplog.at_level(logging.WARNING, logger="recgpt.serving.server"),
        running(recommender, config(host="0.0.0.0")) as base,
    ):
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
    assert any(warning in record.getMessage() for record in caplog.records)
    caplog.clear()
    monkeypatch.setenv("RECGPT_ERRORS_KEY", KEY)
    with caplog.at_level(logging.WARNING, logger="recgpt.serving.server"):
        with running(recommender, config(host="0.0.0.0", api_key_env="RECGPT_ERRORS_KEY")):
            pass
        with running(recommender, config(host="127.0.0.1")):
            pass
    assert not any("without an API key" in record.getMessage() for record in caplog.records)
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::", "example.org")] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]
