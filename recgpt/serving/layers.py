"""The layers around the HTTP application: response metrics outermost, then the API key, the body size and the
body's read timeout, and uvicorn's protocol with a header read timeout."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import time
from typing import Any

from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram
from starlette.routing import BaseRoute, Match
from starlette.types import Message, Receive, Scope, Send

log = logging.getLogger(__name__)
UNMATCHED = "unmatched"  # the metrics label of every path that is no route, so random paths add no series


def problem(status: int, message: str, **headers: str) -> JSONResponse:
    """The JSON error response every status uses: ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def route_label(routes: list[BaseRoute], scope: Scope) -> str:
    """The route template a request is for (``/v1/recommend``), also for a wrong method; else ``unmatched``."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return str(getattr(route, "path", UNMATCHED))
    return UNMATCHED


class Observed:
    """ASGI middleware counting every response by route template and status, and answering 500 as a last resort.

    An exception that escapes the application is logged once here; the client gets a JSON 500 unless a response
    had already started.
    """

    def __init__(self, app: Any, routes: list[BaseRoute], requests_total: Counter, latency: Histogram) -> None:
        self.app, self.routes, self.requests_total, self.latency = app, routes, requests_total, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        label, start, status = route_label(self.routes, scope), time.perf_counter(), None

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        except Exception:
            log.exception("unhandled error answering %s %s", scope.get("method"), label)
            if status is None:
                await problem(500, "internal error; the server log has the details")(scope, receive, observed)
        finally:
            self.requests_total.labels(label, "disconnected" if status is None else str(status)).inc()
            self.latency.labels(label).observe(time.perf_counter() - start)


def authorization_problem(headers: dict[bytes, bytes], api_key: str) -> str | None:
    """Why a request's credentials are refused, or None when they carry the key.

    Accepted: ``Authorization: Bearer <key>`` (the scheme in any case) or ``X-API-Key: <key>``; a bare key in
    ``Authorization`` is refused, so a key is never sent under the wrong scheme.
    """
    expected = "send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
    if b"x-api-key" in headers:
        given = headers[b"x-api-key"].decode("latin-1").strip()
    elif b"authorization" in headers:
        scheme, _, given = headers[b"authorization"].decode("latin-1").strip().partition(" ")
        if scheme.casefold() != "bearer" or not given.strip():
            return f"the Authorization header has no Bearer scheme; {expected}"
        given = given.strip()
    else:
        return f"missing API key; {expected}"
    if not secrets.compare_digest(given.encode("utf-8", "surrogateescape"), api_key.encode()):
        return f"wrong API key; {expected}"
    return None


class Guarded:
    """ASGI middleware: the API key on ``/v1/*`` (401), the body size (413) and the body's arrival time (408).

    A body over ``limit`` bytes, declared or streamed, is answered before it is parsed; a body that has not fully
    arrived ``read_timeout_s`` after the headers is answered 408 and the connection closed. The application then
    sees a client that left.
    """

    def __init__(self, app: Any, limit: int, read_timeout_s: float, api_key: str | None) -> None:
        self.app, self.limit, self.read_timeout_s, self.api_key = app, limit, read_timeout_s, api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.api_key is not None and scope["path"].startswith("/v1/"):
            refused = authorization_problem(headers, self.api_key)
            if refused is not None:
                return await problem(401, refused, **{"WWW-Authenticate": "Bearer"})(scope, receive, send)
        declared = headers.get(b"content-length")
        too_big = f"the request body is over {self.limit} bytes (max_body_bytes); send a shorter history"
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await problem(413, too_big, Connection="close")(scope, receive, send)
        deadline = asyncio.get_running_loop().time() + self.read_timeout_s
        received, refusal, complete = 0, None, False

        async def refuse(status: int, message: str) -> Message:
            nonlocal refusal
            refusal = status
            await problem(status, message, Connection="close")(scope, receive, send)
            return {"type": "http.disconnect"}

        async def limited() -> Message:
            nonlocal received, complete
            if refusal is not None:
                return {"type": "http.disconnect"}
            if complete:  # the body is in; what follows is only the client leaving
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except TimeoutError:
                late = f"the request body did not arrive within {self.read_timeout_s:g} s (read_timeout_s)"
                return await refuse(408, late)
            received += len(message.get("body", b""))
            if received > self.limit:  # a streamed body: answer now, and let the app see a client that left
                return await refuse(413, too_big)
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def guarded(message: Message) -> None:
            if refusal is None:
                await send(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if refusal is None:
                raise  # after a refusal the application only complains that the client left


def h11_protocol(read_timeout_s: float) -> type:
    """uvicorn's h11 protocol, closing a connection whose request headers do not all arrive in time.

    The clock starts when the connection opens, and again when the first bytes of a later request arrive; it
    stops when the headers are complete (the body's own clock is ``Guarded``'s). A connection that sends nothing
    after a response is the keep-alive timeout's to close.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        header_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.header_deadline = self.loop.call_later(read_timeout_s, self.cut_if_stalled, None)

        def in_request(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self.watch_headers()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self.watch_headers()  # a pipelined next request may have sent only part of its headers

        def watch_headers(self) -> None:
            if self.in_request():  # the headers are in
                if self.header_deadline is not None:
                    self.header_deadline.cancel()
                    self.header_deadline = None
            elif self.header_deadline is None and self.conn.trailing_data[0]:  # part of a next request's headers
                self.header_deadline = self.loop.call_later(read_timeout_s, self.cut_if_stalled, self.cycle)

        def cut_if_stalled(self, cycle: Any) -> None:
            self.header_deadline = None
            if self.cycle is cycle and not self.in_request() and not self.transport.is_closing():
                self.transport.close()  # no request started since the clock started: a stalled client

        def connection_lost(self, exc: Exception | None) -> None:
            if self.header_deadline is not None:
                self.header_deadline.cancel()
            super().connection_lost(exc)

    return Protocol


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve to any interface
