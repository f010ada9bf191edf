"""Prometheus metrics of the reconcilers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram, start_http_server

RECONCILES = Counter("tuneroute_reconciles_total", "Reconciles run, by kind and result.", ["kind", "result"])
DURATION = Histogram("tuneroute_reconcile_duration_seconds", "Time spent in one reconcile.", ["kind"])


@contextmanager
def reconciling(kind: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    except Exception:
        RECONCILES.labels(kind, "error").inc()
        raise
    else:
        RECONCILES.labels(kind, "ok").inc()
    finally:
        DURATION.labels(kind).observe(time.perf_counter() - start)


def serve(port: int) -> None:
    if port:
        start_http_server(port)
