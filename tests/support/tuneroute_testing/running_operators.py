"""The operators a test session has running (the e2e suite's session operator, a scoped one), so
that tests which call the reconcilers themselves can pause them: a running operator serves every
namespace and would create the same children first, with its own settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

_running: dict[int, tuple[Callable[[], object], Callable[[], object]]] = {}


def started(operator: object, stop: Callable[[], object], start: Callable[[], object]) -> None:
    _running[id(operator)] = (stop, start)


def stopped(operator: object) -> None:
    _running.pop(id(operator), None)


@contextmanager
def paused() -> Iterator[None]:
    """No operator runs inside the block; those that ran before run again after it."""
    was = list(_running.values())
    for stop, _ in was:
        stop()
    try:
        yield
    finally:
        for _, start in was:
            start()
