"""/metrics counts every response by route template and status; paths that are no route add no series."""

from __future__ import annotations

import uuid

import requests

from recgpt.serving.server import ServeConfig, running


def config(**values) -> ServeConfig:
    return ServeConfig(model="unused", catalog="unused", port=0, **values)


def counted(metrics: str) -> dict[str, float]:
    """``recgpt_requests_total`` by its label set, e.g. ``{'endpoint="/healthz",status="200"': 3.0}``."""
    prefix = "recgpt_requests_total{"
    return {
        line[len(prefix) : line.index("}")]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith(prefix)
    }


def test_random_paths_add_no_series_and_every_status_is_counted_by_route(recommender, monkeypatch):
    monkeypatch.setenv("RECGPT_METRICS_KEY", "k3y")
    with running(recommender, config(api_key_env="RECGPT_METRICS_KEY")) as url:
        key = {"Authorization": "Bearer k3y"}
        requests.get(f"{url}/v1/nothing", timeout=10)
        requests.get(f"{url}/nothing", timeout=10)
        requests.get(f"{url}/metrics", timeout=10)
        before = requests.get(f"{url}/metrics", timeout=10).text
        for _ in range(100):
            assert requests.get(f"{url}/v1/{uuid.uuid4().hex}", timeout=10).status_code == 401
            assert requests.post(f"{url}/{uuid.uuid4().hex}", timeout=10).status_code == 404
        after = requests.get(f"{url}/metrics", timeout=10).text
        assert set(counted(after)) == set(counted(before))
        assert len(after) < len(before) + 500  # only numbers changed
        assert counted(after)['endpoint="unmatched",status="401"'] == 101
        assert counted(after)['endpoint="unmatched",status="404"'] == 101

        big = requests.post(
            f"{url}/v1/recommend", data=b"x" * 300_000, headers={**key, "content-type": "application/json"}
        )
        assert big.status_code == 413
        unauthorised = requests.post(f"{url}/v1/rating", json={"history": ["50"], "item_id": "1"}, timeout=10)
        assert unauthorised.status_code == 401
        assert requests.get(f"{url}/v1/recommend", headers=key, timeout=10).status_code == 405
        bad = requests.post(f"{url}/v1/recommend", json={"history": ["50"], "k": True}, headers=key, timeout=10)
        assert bad.status_code == 422
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
        final = counted(requests.get(f"{url}/metrics", timeout=10).text)
    assert final['endpoint="/v1/recommend",status="413"'] == 1
    assert final['endpoint="/v1/rating",status="401"'] == 1
    assert final['endpoint="/v1/recommend",status="405"'] == 1
    assert final['endpoint="/v1/recommend",status="422"'] == 1
    assert final['endpoint="/healthz",status="200"'] == 1
    assert final['endpoint="/metrics",status="200"'] == 3  # the last one is counted after it answered
    assert all(label.split(",")[0].removeprefix("endpoint=") in ROUTES for label in final)


ROUTES = {
    f'"{route}"'
    for route in ("/v1/recommend", "/v1/rating", "/v1/items", "/healthz", "/metrics", "/", "/docs", "/openapi.json")
} | {'"unmatched"'}


def test_a_streamed_body_over_the_limit_is_counted_as_413(recommender):
    def streamed():  # chunked: no Content-Length, so the limit is found while reading
        yield b'{"history": ['
        for _ in range(60_000):
            yield b'"50", '
        yield b'"50"]}'

    with running(recommender, config()) as url:
        answer = requests.post(f"{url}/v1/recommend", data=streamed(), headers={"content-type": "application/json"})
        assert answer.status_code == 413 and list(answer.json()) == ["error"]
        final = counted(requests.get(f"{url}/metrics", timeout=10).text)
    assert final == {'endpoint="/v1/recommend",status="413"': 1}
