"""One run per object for a burst of watch events.

A training pod alone sends three or four events in its first second (created, scheduled, running,
ready), and its Job as many; recomputing the FineTuneJob's status for each, at a thousand jobs,
kept the operator's workers busy with redundant reads for minutes. The Coalescer runs the work
for a key once per burst: the first request schedules it `delay` seconds later, the requests
until then join that run, and a request that arrives while it runs schedules exactly one more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)


class Coalescer:
    """`request(key)` from the event loop; `work(key)` runs at most once at a time per key and at
    most `limit` at a time overall. A failed run is retried after the `delay` its exception names
    (kopf.TemporaryError), else `retry_delay` seconds."""

    def __init__(self, work: Callable[[Hashable], Awaitable[None]], delay: float, limit: int, retry_delay: float = 5.0):
        self._work = work
        self._delay = delay
        self._retry_delay = retry_delay
        self._limit = limit
        self._slots: asyncio.Semaphore | None = None  # made in the loop that uses it
        self._queued: set[Hashable] = set()
        self._running: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._tasks: set[asyncio.Task] = set()

    def request(self, key: Hashable, delay: float | None = None) -> None:
        if key in self._queued:
            return  # joins the run already scheduled
        if key in self._running:
            self._again.add(key)  # what it read may be older than this request: once more after it
            return
        self._queued.add(key)
        task = asyncio.get_running_loop().create_task(self._run(key, self._delay if delay is None else delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def pending(self) -> int:
        return len(self._queued) + len(self._running)

    async def _run(self, key: Hashable, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._limit)
        async with self._slots:
            self._queued.discard(key)
            self._running.add(key)
            retry: float | None = None
            try:
                await self._work(key)
            except Exception as e:  # the work reports its own errors; this keeps the key alive
                retry = getattr(e, "delay", None) or self._retry_delay  # kopf.TemporaryError says when
                log.warning("%s: %s; retrying in %.0f s", key, e, retry)
            finally:
                self._running.discard(key)
        if retry is not None:
            self._again.discard(key)
            self.request(key, retry)
        elif key in self._again:
            self._again.discard(key)
            self.request(key)
