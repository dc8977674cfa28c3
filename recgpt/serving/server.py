"""``recgpt serve``: the recommender behind an HTTP API (FastAPI on uvicorn).

Endpoints: ``POST /v1/recommend``, ``POST /v1/rating``, ``GET /v1/items`` (catalogue search for the web page),
``GET /healthz``, ``GET /metrics`` (Prometheus text format), ``GET /`` (the web page), ``GET /openapi.json`` and
``GET /docs`` (the routes and schemas as one self-contained page: nothing is loaded from a CDN).

Concurrent requests are queued and batched: a single model worker takes up to ``max_batch_size`` waiting
requests of one kind (waiting at most ``max_wait_ms`` for a batch to fill) and answers them with one model call.
A request joins a batch only once it is known to be answerable: its fields are checked and its prompt is fitted
to the model's context first (oldest history events dropped, as in training), else it is answered 422 naming the
field. If a batch still fails, its requests are answered one by one, so one request never fails another. The
queue is bounded: when ``max_queue`` requests already wait, a request is answered 503 at once with
``Retry-After``, so a flood degrades into quick refusals instead of timeouts.

Every error is ``{"error": "<what is wrong and what to change>"}``, whatever the status. Every response is
counted in ``recgpt_requests_total`` by route template (``/v1/recommend``; ``unmatched`` for any other path)
and status.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException

from recgpt.serving.layers import Guarded, Observed, h11_protocol, is_loopback, problem
from recgpt.serving.recommender import Recommender, RequestError
from recgpt.serving.schemas import (
    ERRORS,
    CatalogItem,
    History,
    Item,
    RatingRequest,
    RatingResponse,
    RecommendRequest,
    RecommendResponse,
    shown,
    validation_message,
)

log = logging.getLogger(__name__)
PAGE = Path(__file__).with_name("page.html")


@dataclass
class ServeConfig:
    """``configs/serve/*.yaml``.

    Attributes:
        model: A Hugging Face model folder (ours, a LoRA export, or RecGPT-7B-Instruct with updated code).
        catalog: The prepared data folder (or a benchmark's ``items.jsonl``) whose items may be recommended.
        benchmark: The data folder's benchmark, when it has several.
        host, port: Where to listen (port 0 picks a free one; the address is logged). A host other than a
            loopback address without ``api_key_env`` is served, with a warning.
        max_batch_size: Requests answered by one model call (1 turns batching off).
        max_wait_ms: How long the worker waits for a batch to fill once a request is waiting.
        max_queue: Requests allowed to wait; one more is answered 503.
        num_beams: Beams of the constrained search (at least ``k`` are used).
        max_k: The largest ``k`` a request may ask for.
        max_history: The most events a history may hold.
        max_body_bytes: Larger request bodies are answered 413.
        read_timeout_s: A client must send a request's headers within this many seconds of connecting (or of their
            first byte, on a kept-alive connection), else the connection is closed; and its body within this many
            seconds of the headers, else it is answered 408 and the connection closed.
        keep_alive_s: An idle kept-alive connection is closed after this many seconds.
        api_key_env: The environment variable holding the API key; null serves without authentication. With a
            key, ``/v1/*`` needs ``Authorization: Bearer <key>`` (scheme in any case) or ``X-API-Key: <key>``.
        threads: Torch CPU threads (null: torch's default).
    """

    model: str = "artifacts/demo/fine-tuning/hf/huggingface/final"
    catalog: str = "artifacts/demo/data"
    benchmark: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 256
    num_beams: int = 10
    max_k: int = 50
    max_history: int = 200
    max_body_bytes: int = 256 * 1024
    read_timeout_s: float = 30.0
    keep_alive_s: float = 5.0
    api_key_env: str | None = None
    threads: int | None = None

    def check(self) -> None:
        """Refuse values the service cannot run with.

        Raises:
            ValueError: Naming the key and its allowed range.
        """
        for key in ("max_batch_size", "max_queue", "num_beams", "max_k", "max_history", "max_body_bytes"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: expected a whole number of at least 1, got {getattr(self, key)}")
        if not self.max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms: expected 0 or more milliseconds, got {self.max_wait_ms}")
        for key in ("read_timeout_s", "keep_alive_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key}: expected a number of seconds above 0, got {getattr(self, key)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port: expected 0 to 65535, got {self.port}")


# -- batching ---------------------------------------------------------------------------------------------------


class Overloaded(Exception):
    """The queue is full."""


@dataclass
class _Job:
    kind: str  # "recommend" or "rating"
    key: Any  # jobs batch together only with the same kind and key (e.g. the same k)
    payload: Any
    future: asyncio.Future[Any] = field(repr=False)


class Batcher:
    """Queue requests and answer them in batches on one model thread; a failing batch is answered one by one."""

    def __init__(
        self,
        handlers: dict[str, Callable[[Any, list[Any]], list[Any]]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        batch_sizes: Histogram,
        queue_depth: Gauge,
    ) -> None:
        self.handlers = handlers
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recgpt-model")
        self.batch_sizes, self.queue_depth = batch_sizes, queue_depth
        self.held: list[_Job] = []  # taken from the queue but of another kind than the batch being filled

    async def submit(self, kind: str, key: Any, payload: Any) -> Any:
        """Queue one request and wait for its answer.

        Raises:
            Overloaded: If ``max_queue`` requests are already waiting.
        """
        job = _Job(kind, key, payload, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull as error:
            raise Overloaded from error
        self.queue_depth.set(self.queue.qsize())
        return await job.future

    async def _next(self, timeout: float | None) -> _Job | None:
        if self.held:
            return self.held.pop(0)
        try:
            if timeout is None:
                return await self.queue.get()
            return await asyncio.wait_for(self.queue.get(), timeout) if timeout > 0 else self.queue.get_nowait()
        except (TimeoutError, asyncio.QueueEmpty):
            return None

    async def _fill(self) -> list[_Job]:
        """The next batch: the first waiting request and up to ``max_batch_size - 1`` more of its kind and key."""
        loop = asyncio.get_running_loop()
        first = await self._next(None)
        assert first is not None
        batch, other = [first], []
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            job = await self._next(deadline - loop.time())
            if job is None:
                break
            (batch if (job.kind, job.key) == (first.kind, first.key) else other).append(job)
        self.held = other + self.held
        self.queue_depth.set(self.queue.qsize() + len(self.held))
        return [job for job in batch if not job.future.done()]  # a client that hung up is not computed

    async def _answer(self, kind: str, key: Any, jobs: list[_Job]) -> list[Any]:
        """Each job's answer, or the exception that is its answer; a failed batch is retried one job at a time."""
        try:
            handler = self.handlers[kind]
            answers = await asyncio.get_running_loop().run_in_executor(
                self.executor, handler, key, [job.payload for job in jobs]
            )
            if len(answers) != len(jobs):
                raise RuntimeError(f"the {kind} handler gave {len(answers)} answers for {len(jobs)} requests")
            return answers
        except Exception as error:
            if len(jobs) > 1:
                log.warning("a batch of %d %s requests failed (%r); answering them one by one", len(jobs), kind, error)
                return [(await self._answer(kind, key, [job]))[0] for job in jobs]
            return [error]  # the request's own error: a RequestError is its 422, anything else its logged 500

    async def run(self) -> None:
        """The worker loop: fill a batch of one kind, run it on the model thread, answer each request."""
        while True:
            live = await self._fill()
            if not live:
                continue
            self.batch_sizes.labels(live[0].kind).observe(len(live))
            answers = await self._answer(live[0].kind, live[0].key, live)
            for job, answer in zip(live, answers, strict=True):
                if job.future.done():
                    continue
                if isinstance(answer, Exception):
                    job.future.set_exception(answer)
                else:
                    job.future.set_result(answer)


# -- the application ----------------------------------------------------------------------------------------------


def docs_page(schema: dict[str, Any]) -> str:
    """The API's routes, parameters and schemas as one HTML page with no scripts and no external assets."""
    parts = [f"<h1>{html.escape(schema['info']['title'])} {html.escape(schema['info']['version'])}</h1>"]
    parts.append(f"<p>{html.escape(schema['info'].get('description', ''))}</p>")
    parts.append('<p>The machine-readable schema is <a href="/openapi.json">/openapi.json</a>.</p>')
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            parts.append(f"<h2><code>{method.upper()} {html.escape(path)}</code></h2>")
            parts.append(f"<p>{html.escape(operation.get('description') or operation.get('summary', ''))}</p>")
            for parameter in operation.get("parameters", []):
                parts.append(f"<p>Query <code>{html.escape(parameter['name'])}</code></p>")
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                parts.append(f"<p>Body: <code>{html.escape(body.get('$ref', '').rsplit('/', 1)[-1])}</code></p>")
            codes = ", ".join(html.escape(code) for code in operation.get("responses", {}))
            parts.append(f"<p>Responses: {codes}</p>")
    parts.append("<h2>Schemas</h2>")
    for name, component in schema.get("components", {}).get("schemas", {}).items():
        parts.append(f"<h3 id='{html.escape(name)}'>{html.escape(name)}</h3>")
        parts.append(f"<pre>{html.escape(json.dumps(component, indent=2))}</pre>")
    style = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}pre{overflow:auto}"
    return f"<!doctype html><meta charset=utf-8><title>recgpt API</title><style>{style}</style>" + "".join(parts)


def _install_error_handlers(app: FastAPI, config: ServeConfig) -> None:
    """Answer every error FastAPI and Starlette raise as ``{"error": ...}``."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        kind = request.headers.get("content-type", "")
        subtype = kind.split(";")[0].strip().lower().partition("/")[2]
        if request.method == "POST" and subtype != "json" and not subtype.endswith("+json"):  # FastAPI's rule
            shown = f"Content-Type {kind!r}" if kind else "no Content-Type"
            return problem(415, f"the body must be JSON: send it with 'Content-Type: application/json' ({shown})")
        broken = next((p for p in problems if p.get("type") == "json_invalid"), None)
        if broken is not None:
            detail = broken.get("ctx", {}).get("error", "")
            return problem(400, f"the body is not valid JSON ({detail}); send a JSON object")
        return problem(422, validation_message(list(problems)))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        headers = dict(error.headers or {})
        path = shown(request.url.path)
        if error.status_code == 400:  # FastAPI's "There was an error parsing the body": not UTF-8, say
            message = "the body is not valid JSON (it could not be decoded); send a JSON object in UTF-8"
        elif error.status_code == 404:
            message = f"no route {path}; the routes are listed at /docs and /openapi.json"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {path}; use {headers.get('Allow', 'another method')}"
        else:
            message = str(error.detail)
        return problem(error.status_code, message, **headers)

    @app.exception_handler(RequestError)
    async def bad_request(_request: Request, error: RequestError) -> JSONResponse:
        return problem(422, str(error))

    @app.exception_handler(Overloaded)
    async def overloaded(_request: Request, _error: Overloaded) -> JSONResponse:
        return problem(503, f"busy: {config.max_queue} requests are waiting; retry shortly", **{"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def failed(_request: Request, error: Exception) -> JSONResponse:
        return problem(500, f"internal error ({type(error).__name__}); the server log has the details")


def _metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram, Histogram, Gauge]:
    requests_total = Counter(
        "recgpt_requests", "HTTP responses by route template and status", ["endpoint", "status"], registry=registry
    )
    latency = Histogram(
        "recgpt_request_seconds",
        "Time to answer a request, by route template",
        ["endpoint"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        registry=registry,
    )
    batch_sizes = Histogram(
        "recgpt_batch_size", "Requests per model call", ["kind"], buckets=(1, 2, 4, 8, 16, 32, 64), registry=registry
    )
    queue_depth = Gauge("recgpt_queue_depth", "Requests waiting for the model", registry=registry)
    return requests_total, latency, batch_sizes, queue_depth


def build_app(recommender: Recommender, config: ServeConfig) -> Any:
    """The ASGI application serving ``recommender`` as ``config`` says (FastAPI inside its guarding layers)."""
    config.check()
    registry = CollectorRegistry()
    requests_total, latency, batch_sizes, queue_depth = _metrics(registry)
    catalog = recommender.catalog
    batcher = Batcher(
        {
            "recommend": lambda key, jobs: recommender.recommend_batch(
                [history for history, _ in jobs], k=key[0], exclude_seen=key[1], exclude=[extra for _, extra in jobs]
            ),
            "rating": lambda _key, requests: recommender.predict_rating_batch(requests),
        },
        max_batch_size=config.max_batch_size,
        max_wait_s=config.max_wait_ms / 1000,
        max_queue=config.max_queue,
        batch_sizes=batch_sizes,
        queue_depth=queue_depth,
    )
    api_key = None
    if config.api_key_env:
        api_key = os.environ.get(config.api_key_env)
        if not api_key:
            raise ValueError(f"api_key_env: the environment variable {config.api_key_env} is not set (or empty)")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()
        batcher.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="recgpt",
        version="0.1.0",
        description="Next-item recommendations and rating predictions from a RecGPT-style language model. "
        'Every recommended item is a real catalogue item. Every error is {"error": "..."}.',
        lifespan=lifespan,
        docs_url=None,  # FastAPI's Swagger UI and ReDoc load their assets from a CDN; /docs is served below
        redoc_url=None,
    )
    _install_error_handlers(app, config)

    def plain(history: History) -> list[Any]:
        return [event if isinstance(event, str) else event.model_dump(exclude_none=True) for event in history]

    @app.post("/v1/recommend", response_model=RecommendResponse, responses=ERRORS)
    async def recommend(body: RecommendRequest) -> RecommendResponse:
        """The ``k`` best catalogue items to follow a history, best first."""
        if not 1 <= body.k <= min(config.max_k, len(catalog.items)):
            raise RequestError(f"k: expected a whole number from 1 to {min(config.max_k, len(catalog.items))}")
        history = plain(body.history)
        recommender.next_item_ids(history)  # a request that cannot be answered is refused here, never in a batch
        recommender.check_exclude(body.exclude)
        found = await batcher.submit("recommend", (body.k, body.exclude_seen), (history, body.exclude))
        return RecommendResponse(items=[Item(**vars(item)) for item in found])

    @app.post("/v1/rating", response_model=RatingResponse, responses=ERRORS)
    async def rating(body: RatingRequest) -> RatingResponse:
        """The rating the user would give ``item_id`` after the history."""
        history = plain(body.history)
        recommender.rating_ids(history, body.item_id, body.review)  # validates history, item and length
        estimate = await batcher.submit("rating", None, (history, body.item_id, body.review))
        return RatingResponse(**vars(estimate))

    @app.get("/v1/items", response_model=list[CatalogItem], responses=ERRORS)
    async def items(query: str = "", limit: int = 20) -> list[CatalogItem]:
        """Catalogue items whose title contains ``query`` (case-insensitive), for building a history."""
        needle = query.casefold().strip()
        found = []
        for item in catalog.items.values():
            if needle in item.title.casefold():
                found.append(CatalogItem(item_id=item.item_id, title=item.title, text=catalog.text(item.item_id)))
                if len(found) >= max(1, min(limit, 100)):
                    break
        return found

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness and what is served."""
        return {"status": "ok", "items": len(catalog.items), "queue": batcher.queue.qsize()}

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics: responses by route template and status, latency, batch sizes, queue depth."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(app.openapi()))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    guarded = Guarded(app, config.max_body_bytes, config.read_timeout_s, api_key)
    return Observed(guarded, app.router.routes, requests_total, latency)


def load_recommender(config: ServeConfig) -> Recommender:
    """The recommender a config describes."""
    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    return Recommender.from_pretrained(
        config.model,
        config.catalog,
        benchmark=config.benchmark,
        num_beams=config.num_beams,
        max_history=config.max_history,
    )


def _server(app: Any, config: ServeConfig) -> tuple[Any, socket.socket]:
    import uvicorn

    if not is_loopback(config.host) and not config.api_key_env:
        log.warning(
            "listening on %s without an API key: anyone who can reach this port can use the API; set api_key_env "
            "(e.g. api_key_env=RECGPT_API_KEY with that variable set) or listen on host=127.0.0.1",
            config.host,
        )
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on accepted connections only for sockets whose
    # protocol is TCP; without it every response on a kept-alive connection waits ~40 ms for delayed ACKs (Nagle).
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((config.host, config.port))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            http=h11_protocol(config.read_timeout_s),
            timeout_keep_alive=config.keep_alive_s,  # type: ignore[arg-type]
        )
    )
    return server, sock


def serve(config: ServeConfig) -> None:
    """Run the service until interrupted; logs the address it listens on."""
    config.check()
    app = build_app(load_recommender(config), config)
    server, sock = _server(app, config)
    host, port = sock.getsockname()[:2]
    log.info("serving on http://%s:%d (web page /, API docs /docs)", host, port)
    server.run(sockets=[sock])


@contextmanager
def running(recommender: Recommender, config: ServeConfig) -> Iterator[str]:
    """Serve in a background thread (tests, benchmarks, the demo); yields the base URL, stops on exit."""
    app = build_app(recommender, config)
    server, sock = _server(app, config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    host, port = sock.getsockname()[:2]
    try:
        yield f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
