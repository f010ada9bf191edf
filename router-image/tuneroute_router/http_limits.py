"""The limits that bound what one client may cost the router, below and above the ASGI app.

- Connections (`protocol`): uvicorn's httptools protocol bounds neither the size of a request's
  headers nor how long they may take to arrive (its keep-alive timer only runs between
  requests; h11_max_incomplete_event_size applies to the slower h11 protocol only). A subclass
  adds both: a 431 past server.maxHeaderBytes, a 408 past server.headerTimeoutSeconds, each
  closing the connection.
- Requests (`InFlightCap`): at most server.maxInFlight requests to the OpenAI endpoints in
  progress per replica, streams included; beyond, a 503 router_busy with Retry-After.
- Bodies (`too_many_elements`): a cheap pre-scan before orjson builds Python objects.

Each reads the config in effect when a connection or request starts, so limits hot-reload.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import Server
from .errors import error_response


def too_many_elements(raw: bytes, limit: int) -> bool:
    """Whether the body may hold more than `limit` JSON values: every container starts with '['
    or '{' and every value after a container's first follows a ','. Characters inside strings
    count too (an overestimate, never an under-), and bytes.count runs at memory speed: about
    1 ms per MiB, where parsing 4 MiB of nested empty arrays costs over 100 MiB of objects."""
    return raw.count(b"[") + raw.count(b"{") + raw.count(b",") > limit


class HeadersTooLarge(Exception):
    pass


def _plain(status: bytes, message: bytes) -> bytes:
    return b"".join(
        [
            b"HTTP/1.1 " + status + b"\r\n",
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(message)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            message,
        ]
    )


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus a header size limit and a header timeout."""

    limits: Callable[[], Server] = Server  # replaced by protocol(); a plain default for type checks

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_bytes = self._header_phase_bytes = 0
        self._too_large = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._server_limits = self.limits()
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self._server_limits.header_timeout_seconds, self._headers_timed_out
            )

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(_plain(b"408 Request Timeout", b"request headers not received in time\n"))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            # no request in progress: these bytes start one, whose headers must arrive in time
            self._server_limits, self._header_phase_bytes = self.limits(), 0
            self._arm()
        if self._header_timer is not None:
            self._header_phase_bytes += len(data)
        super().data_received(data)
        # Still no end of headers: all of it is headers. httptools buffers a header value until it
        # ends (on_header sees it only then), so one endless header is cut here, not in _count.
        if self._header_timer is not None and self._header_phase_bytes > self._server_limits.max_header_bytes:
            self._too_large = True
            self._disarm()
            self.send_400_response("")

    def on_message_begin(self) -> None:
        self._header_bytes = 0
        super().on_message_begin()

    def _count(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self._server_limits.max_header_bytes:
            self._too_large = True
            raise HeadersTooLarge  # httptools stops parsing; uvicorn answers through send_400_response

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self.transport.is_closing():
            return
        if not self._too_large:
            return super().send_400_response(msg)
        limit = self._server_limits.max_header_bytes
        self.transport.write(
            _plain(b"431 Request Header Fields Too Large", f"request headers exceed {limit} bytes\n".encode())
        )
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol(limits: Callable[[], Server]) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http=`, reading the limits in effect from `limits()`."""
    return type("RouterHttpProtocol", (LimitedHttpToolsProtocol,), {"limits": staticmethod(limits)})


class InFlightCap:
    """ASGI middleware: a replica-wide cap on requests to /v1/ in progress (to the last byte of
    a stream). Probes and /metrics pass, so that a saturated router stays alive and observable."""

    def __init__(self, app: ASGIApp, limits: Callable[[], Server], refused: Callable[[], None]):
        self.app, self.limits, self.refused = app, limits, refused
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        limit = self.limits().max_in_flight
        if self.in_flight >= limit:
            self.refused()
            message = f"router is at its limit of {limit} requests in flight (server.maxInFlight); retry shortly"
            busy = error_response(503, message, "server_error", "router_busy", headers={"retry-after": "1"})
            await busy(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
