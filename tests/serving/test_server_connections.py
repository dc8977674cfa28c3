"""Connections: TCP_NODELAY on accepted sockets (kept-alive latency), stalled and idle clients are cut."""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
from urllib.parse import urlsplit

import pytest

from recgpt.serving.server import ServeConfig, running


def config(**values) -> ServeConfig:
    return ServeConfig(model="unused", catalog="unused", port=0, **values)


def server_side(client: socket.socket) -> socket.socket:
    """The server's accepted socket of ``client``'s connection, found among this process's descriptors."""
    for name in os.listdir("/proc/self/fd"):
        try:
            candidate = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue  # not a socket
        try:
            if candidate.getsockname() == client.getpeername() and candidate.getpeername() == client.getsockname():
                return candidate
        except OSError:
            pass
        candidate.close()
    raise AssertionError("the server's end of the connection was not found")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_a_kept_alive_connection_has_tcp_nodelay_on_the_server_side(recommender):
    with running(recommender, config()) as url:
        address = urlsplit(url)
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        sockets = []
        for _ in range(3):
            connection.request("GET", "/healthz")
            answer = connection.getresponse()
            assert answer.status == 200 and json.loads(answer.read())["status"] == "ok"
            sockets.append(connection.sock)
        assert sockets[0] is sockets[1] is sockets[2]  # one connection, kept alive
        accepted = server_side(connection.sock)
        try:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            accepted.close()
            connection.close()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout fails the test)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def connect(url: str) -> socket.socket:
    address = urlsplit(url)
    sock = socket.create_connection((address.hostname, address.port), timeout=20)
    return sock


def test_a_client_that_stalls_on_its_body_gets_408_and_is_disconnected(recommender):
    with running(recommender, config(read_timeout_s=1)) as url:
        sock = connect(url)
        head = "POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        sock.sendall(head.encode() + b'{"history": ["50"')  # then nothing more: 83 bytes never come
        answer = read_until_closed(sock)
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in answer.lower()
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body == {"error": "the request body did not arrive within 1 s (read_timeout_s)"}


def test_a_client_that_stalls_in_its_headers_is_disconnected(recommender):
    with running(recommender, config(read_timeout_s=1, keep_alive_s=60)) as url:
        mute = connect(url)  # connects and sends nothing
        assert read_until_closed(mute) == b""
        mute.close()
        silent = connect(url)
        silent.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the headers never end
        assert read_until_closed(silent) == b""
        silent.close()
        later = connect(url)  # one whole request, then half of the next one's headers
        later.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n")
        answer = read_until_closed(later)
        later.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1") == 1


def test_an_idle_kept_alive_connection_is_closed_after_keep_alive_s(recommender):
    with running(recommender, config(read_timeout_s=60, keep_alive_s=1)) as url:
        idle = connect(url)  # the socket's 20 s timeout fails the test if only the 60 s read timeout closed it
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_until_closed(idle)
        idle.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"}")


def test_timeouts_below_zero_are_refused_naming_the_key(recommender):
    from recgpt.serving.server import build_app

    with pytest.raises(ValueError, match=r"read_timeout_s: expected a number of seconds above 0, got 0"):
        build_app(recommender, config(read_timeout_s=0))
    with pytest.raises(ValueError, match=r"keep_alive_s: expected a number of seconds above 0, got -1"):
        build_app(recommender, config(keep_alive_s=-1))
