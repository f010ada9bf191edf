"""Per-backend circuit breaker and concurrency gate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Circuit:
    """Closed -> open after `threshold` consecutive failures; after `cooldown` one trial
    request is let through (half-open): success closes, failure re-opens."""

    threshold: int
    cooldown: float
    failures: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.cooldown else "open"

    def allow(self) -> bool:
        s = self.state
        if s == "closed":
            return True
        if s == "half-open" and not self.trial_in_flight:
            self.trial_in_flight = True
            return True
        return False

    def success(self) -> None:
        self.failures, self.opened_at, self.trial_in_flight = 0, None, False

    def failure(self) -> bool:
        """Record a failure; True when this failure opened (or re-opened) the circuit."""
        self.trial_in_flight = False
        if self.opened_at is not None:  # failed trial: another full cooldown
            self.opened_at = self.clock()
            return True
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = self.clock()
            return True
        return False

    def release_trial(self) -> None:
        """A half-open trial that ended without a verdict (e.g. client went away)."""
        self.trial_in_flight = False


class Gate:
    """Concurrency limit per backend. `busy` lets dispatch skip to another model
    instead of queueing; when every candidate is busy it queues on one with a timeout.
    At most `limit` requests wait (as many as run): a flood beyond that is refused at once
    instead of piling up in memory behind a busy backend."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_flight = 0
        self.waiting = 0
        self._sem = asyncio.Semaphore(limit)

    def busy(self) -> bool:
        return self._sem.locked()

    async def enter(self, timeout: float) -> bool:
        """Take a slot, waiting up to `timeout` seconds when there is none; False: none came."""
        if self._sem.locked():
            if self.waiting >= self.limit:
                return False
            self.waiting += 1
            try:
                await asyncio.wait_for(self._sem.acquire(), timeout)
            except TimeoutError:
                return False
            finally:
                self.waiting -= 1
        else:
            await self._sem.acquire()  # free slot: returns without suspending
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1
        self._sem.release()
