"""What one client may cost a router replica (server.* in the router config): hostile bodies,
floods, huge or half-sent headers and bodies, against the real router process over TCP."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from tuneroute_testing.process import wait_until
from tuneroute_testing.router_harness import base_config, start_router

EASY = {"model": "small", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
LIMITS = {
    "maxBodyBytes": 8 * 1024 * 1024,
    "maxInFlight": 2,
    "maxHeaderBytes": 4096,
    "headerTimeoutSeconds": 0.5,
    "bodyTimeoutSeconds": 0.5,
}


@pytest.fixture(scope="module")
def router(tmp_mod, backends):
    r = start_router(tmp_mod, base_config(*backends, server=LIMITS))
    yield r
    r.proc.stop()


def _connect(router) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", router.port), timeout=5)
    return s


def _read_all(s: socket.socket) -> bytes:
    """Everything the router sends until it closes the connection (socket timeout: 5 s)."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def test_a_body_of_empty_arrays_is_refused_before_it_is_parsed(router):
    """4 MiB of nested empty arrays used to take the router from 127 to 252 MiB (issue 11;
    bench/router_hostile_bodies.py measures it): now a 413 at the cost of its bytes."""
    hostile = b'{"model": "small", "messages": [{"role": "user", "content": "hi"}], "metadata": ['
    hostile += b"[]," * 1_400_000 + b"[]]}"
    r = httpx.post(router.base + "/v1/chat/completions", content=hostile, headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "too_many_elements" and "server.maxJsonElements" in r.text
    assert httpx.post(router.base + "/v1/chat/completions", json=EASY).status_code == 200


def test_beyond_max_in_flight_a_503_with_retry_after_and_probes_still_answer(router, backends):
    small, _ = backends
    small.control(delay_s=3.0)
    results: list[int] = []

    def slow() -> None:
        results.append(httpx.post(router.base + "/v1/chat/completions", json=EASY, timeout=30).status_code)

    threads = [threading.Thread(target=slow) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: router.metric("tuneroute_in_flight", model="small") == 2, 10, "two requests in flight")
        r = httpx.post(router.base + "/v1/chat/completions", json=EASY)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "router_busy" and "server.maxInFlight" in r.text
        assert httpx.get(router.base + "/healthz").status_code == 200
        assert router.metric("tuneroute_refused_total", limit="maxInFlight") == 1
    finally:
        for t in threads:
            t.join()
        small.control(delay_s=0.0)
    assert results == [200, 200]
    assert httpx.post(router.base + "/v1/chat/completions", json=EASY).status_code == 200


def test_headers_over_the_limit_are_a_431(router):
    r = httpx.post(router.base + "/v1/chat/completions", json=EASY, headers={"x-padding": "a" * 8192})
    assert r.status_code == 431
    # one header value that never ends: cut once it passes the limit, not buffered for ever
    with _connect(router) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-padding: ")
        s.sendall(b"a" * 64 * 1024)
        assert _read_all(s).startswith(b"HTTP/1.1 431 ")


def test_half_sent_headers_do_not_hold_a_connection(router):
    with _connect(router) as s:
        t = time.monotonic()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        assert _read_all(s).startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - t < 4
    # the same on a kept-alive connection, for its second request
    with _connect(router) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            first += s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        assert _read_all(s).startswith(b"HTTP/1.1 408 ")


def test_a_half_sent_body_is_a_408(router):
    with _connect(router) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\n\r\n" + b'{"model": "small",'
        )
        answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 408 ") and b"server.bodyTimeoutSeconds" in answer
