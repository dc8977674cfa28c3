"""``recgpt serve``: the recommender behind an HTTP API (FastAPI on uvicorn).

Endpoints: ``POST /v1/recommend``, ``POST /v1/rating``, ``GET /v1/items`` (catalogue search for the web page),
``GET /healthz``, ``GET /metrics`` (Prometheus text format), ``GET /`` (the web page), and FastAPI's
``/openapi.json`` and ``/docs``.

Concurrent requests are queued and batched: a single model worker takes up to ``max_batch_size`` waiting
requests of one kind (waiting at most ``max_wait_ms`` for a batch to fill) and answers them with one model call.
The queue is bounded: when ``max_queue`` requests already wait, a request is answered 503 at once with
``Retry-After``, so a flood degrades into quick refusals instead of timeouts. Bad requests are answered 4xx
with a message naming the field to fix; the worker never sees them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from recgpt.serving.recommender import Recommender, RequestError

log = logging.getLogger(__name__)
PAGE = Path(__file__).with_name("page.html")


@dataclass
class ServeConfig:
    """``configs/serve/*.yaml``.

    Attributes:
        model: A Hugging Face model folder (ours, a LoRA export, or RecGPT-7B-Instruct with updated code).
        catalog: The prepared data folder (or a benchmark's ``items.jsonl``) whose items may be recommended.
        benchmark: The data folder's benchmark, when it has several.
        host, port: Where to listen (port 0 picks a free one; the address is logged).
        max_batch_size: Requests answered by one model call (1 turns batching off).
        max_wait_ms: How long the worker waits for a batch to fill once a request is waiting.
        max_queue: Requests allowed to wait; one more is answered 503.
        num_beams: Beams of the constrained search (at least ``k`` are used).
        max_k: The largest ``k`` a request may ask for.
        max_history: The most events a history may hold.
        max_body_bytes: Larger request bodies are answered 413.
        api_key_env: The environment variable holding the API key; null serves without authentication. With a
            key, ``/v1/*`` needs ``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``).
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
    api_key_env: str | None = None
    threads: int | None = None


# -- request and response schemas (the OpenAPI schema is generated from these) --------------------------------


class Event(BaseModel):
    """One history event: a catalogue item, with the user's rating and review when known."""

    model_config = ConfigDict(extra="forbid")
    item_id: str = Field(min_length=1, max_length=256, examples=["50"])
    rating: float | None = Field(default=None, examples=[5.0])
    review: str | None = Field(default=None, max_length=10_000)
    timestamp: float | None = None


History = list[str | Event]
HISTORY_DOC = "Oldest first: item ids, or events with item_id and optional rating and review"


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    history: History = Field(description=HISTORY_DOC, examples=[["50", {"item_id": "181", "rating": 4.0}]])
    k: int = Field(default=10, description="How many items to return")
    exclude_seen: bool = Field(default=True, description="Never recommend an item of the history")
    exclude: list[str] = Field(
        default_factory=list,
        max_length=100_000,
        description="More item ids never to recommend, e.g. everything the user saw before the history window",
    )


class Item(BaseModel):
    item_id: str
    title: str
    text: str = Field(description="The item's line as the model writes it")
    score: float = Field(description="Length-normalised log-probability of the line; higher is better")
    probability: float = Field(description="The model's probability of the whole line")


class RecommendResponse(BaseModel):
    items: list[Item]


class RatingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    history: History = Field(description=HISTORY_DOC)
    item_id: str = Field(min_length=1, max_length=256, description="The catalogue item to rate")
    review: str | None = Field(default=None, max_length=10_000, description="The user's review of it, if written")


class RatingResponse(BaseModel):
    item_id: str
    rating: float = Field(description="Expected rating under the model's probabilities of the rating strings")
    distribution: dict[str, float]


class CatalogItem(BaseModel):
    item_id: str
    title: str
    text: str


class Problem(BaseModel):
    error: str = Field(description="What is wrong and how to fix it")


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Problem} for code in (400, 401, 413, 422, 503)}


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
    """Queue requests and answer them in batches on one model thread."""

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

    async def run(self) -> None:
        """The worker loop: fill a batch of one kind, run it on the model thread, answer each request."""
        loop = asyncio.get_running_loop()
        while True:
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
            live = [job for job in batch if not job.future.done()]  # a client that hung up is not computed
            if not live:
                continue
            self.batch_sizes.labels(first.kind).observe(len(live))
            handler = self.handlers[first.kind]
            try:
                answers = await loop.run_in_executor(self.executor, handler, first.key, [job.payload for job in live])
            except Exception as error:  # answer every waiting request rather than leaving it hanging
                log.exception("model call failed for a batch of %d", len(live))
                answers = [error] * len(live)
            for job, answer in zip(live, answers, strict=True):
                if job.future.done():
                    continue
                if isinstance(answer, Exception):
                    job.future.set_exception(answer)
                else:
                    job.future.set_result(answer)


# -- the application ----------------------------------------------------------------------------------------------


def _where(location: tuple[Any, ...]) -> str:
    """``("body", "history", 2, "Event", "rating")`` -> ``history[2].rating``."""
    path = ""
    for part in location[1:] if location and location[0] == "body" else location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("str", "Event") or "[" in str(part):  # pydantic's union-member labels
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def _problem(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


class BodyLimit:
    """ASGI middleware answering 413 to a body over ``limit`` bytes, declared or streamed, before it is parsed."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = f"the request body is over {self.limit} bytes; send a shorter history"
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _problem(413, too_big)(scope, receive, send)
        received, refused = 0, False

        async def limited() -> dict[str, Any]:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # a streamed body: answer now, and let the app see a client that left
                refused = True
                await _problem(413, too_big)(scope, receive, send)
                return {"type": "http.disconnect"}
            return message

        async def guarded(message: dict[str, Any]) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited, guarded)


def build_app(recommender: Recommender, config: ServeConfig) -> FastAPI:
    """The FastAPI application serving ``recommender`` as ``config`` says."""
    registry = CollectorRegistry()
    requests_total = Counter("recgpt_requests", "HTTP requests answered", ["endpoint", "status"], registry=registry)
    latency = Histogram(
        "recgpt_request_seconds",
        "Time to answer a request",
        ["endpoint"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        registry=registry,
    )
    batch_sizes = Histogram(
        "recgpt_batch_size", "Requests per model call", ["kind"], buckets=(1, 2, 4, 8, 16, 32, 64), registry=registry
    )
    queue_depth = Gauge("recgpt_queue_depth", "Requests waiting for the model", registry=registry)

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
        "Every recommended item is a real catalogue item.",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        path = request.url.path
        if path.startswith("/v1/") and api_key is not None:
            given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
            if not secrets.compare_digest(given.encode(), api_key.encode()):
                response: Response = _problem(
                    401, "missing or wrong API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
                )
                requests_total.labels(path, "401").inc()
                return response
        response = await call_next(request)
        if path in ("/v1/recommend", "/v1/rating", "/v1/items"):
            requests_total.labels(path, str(response.status_code)).inc()
            latency.labels(path).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            detail = next(p for p in problems if p.get("type") == "json_invalid").get("ctx", {}).get("error", "")
            return _problem(400, f"the body is not valid JSON ({detail}); send a JSON object")
        messages = []
        union_members = ("str", "Event")
        for p in problems:
            location = tuple(p.get("loc", ()))
            member = next((i for i, part in enumerate(location) if part in union_members), None)
            message = p.get("msg", "invalid")
            if p.get("type") == "missing":
                message = "required"
            elif p.get("type") == "extra_forbidden":
                message = "unknown field; use item_id, rating, review" if member is not None else "unknown field"
            if member is not None and member == len(location) - 1:
                # the value fits neither a string nor an event: say what it may be
                deeper = [q for q in problems if tuple(q.get("loc", ()))[:member] == location[:member]]
                if any(len(q.get("loc", ())) > member + 1 for q in deeper):
                    continue  # it is an event object with a bad field; that field's message says more
                message = "expected an item id (a string) or an object with item_id and optional rating, review"
            messages.append(f"{_where(location)}: {message}")
        return _problem(422, "; ".join(list(dict.fromkeys(messages))[:5]))

    @app.exception_handler(RequestError)
    async def bad_request(_request: Request, error: RequestError) -> JSONResponse:
        return _problem(422, str(error))

    @app.exception_handler(Overloaded)
    async def overloaded(_request: Request, _error: Overloaded) -> JSONResponse:
        return _problem(503, f"busy: {config.max_queue} requests are waiting; retry shortly", **{"Retry-After": "1"})

    def plain(history: History) -> list[Any]:
        return [event if isinstance(event, str) else event.model_dump(exclude_none=True) for event in history]

    @app.post("/v1/recommend", response_model=RecommendResponse, responses=ERRORS)
    async def recommend(body: RecommendRequest) -> RecommendResponse:
        """The ``k`` best catalogue items to follow a history, best first."""
        if not 1 <= body.k <= min(config.max_k, len(catalog.items)):
            raise RequestError(f"k: expected a whole number from 1 to {min(config.max_k, len(catalog.items))}")
        history = plain(body.history)
        recommender.parse_history(history)  # a bad request is refused here, never in a batch
        recommender.check_exclude(body.exclude)
        found = await batcher.submit("recommend", (body.k, body.exclude_seen), (history, body.exclude))
        return RecommendResponse(items=[Item(**vars(item)) for item in found])

    @app.post("/v1/rating", response_model=RatingResponse, responses=ERRORS)
    async def rating(body: RatingRequest) -> RatingResponse:
        """The rating the user would give ``item_id`` after the history."""
        history = plain(body.history)
        recommender.rating_prompt(history, body.item_id, body.review)  # validates history and item
        estimate = await batcher.submit("rating", None, (history, body.item_id, body.review))
        return RatingResponse(**vars(estimate))

    @app.get("/v1/items", response_model=list[CatalogItem])
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
        """Prometheus metrics: requests by endpoint and status, latency, batch sizes, queue depth."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    return BodyLimit(app, config.max_body_bytes)  # type: ignore[return-value]


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

    sock = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=30))
    return server, sock


def serve(config: ServeConfig) -> None:
    """Run the service until interrupted; logs the address it listens on."""
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
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
