"""Stream a backend's SSE response to the client as it arrives."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

import aiohttp

from .accounting import Usage, usage_of_stream
from .dispatch import Dispatcher, Served

log = logging.getLogger("tuneroute.relay")


async def relay(
    served: Served, dispatcher: Dispatcher, finished: Callable[[Usage, bool, float], None]
) -> AsyncIterator[bytes]:
    """Pass the bytes through unbuffered; when the stream ends, give the backend's slot back and
    call `finished(usage, broken, seconds streaming)`.

    A stream that breaks is too late to fall back: the client already has part of the answer.
    The error is re-raised so that the server aborts the response and the client sees a broken
    stream, not a clean end without [DONE]; the backend's circuit counts the failure.
    """
    b, resp = served.backend, served.response
    tail = b""
    t = time.perf_counter()
    broken = finished_ok = False
    try:
        async for chunk in resp.content.iter_any():
            if b'"usage"' in chunk:
                tail = chunk
            yield chunk
        finished_ok = True
    except (TimeoutError, aiohttp.ClientError) as e:
        broken = True
        dispatcher.record_failure(b)
        log.warning("stream from %s broke: %s", b.model.name, type(e).__name__)
        raise
    finally:
        if finished_ok:
            resp.release()
        else:
            resp.close()  # broken or client gone: the connection is mid-response, drop it
        dispatcher.release(b)
        finished(usage_of_stream(tail), broken, time.perf_counter() - t)
