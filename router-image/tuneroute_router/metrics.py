"""Prometheus metrics, one registry per app so tests can run several routers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "tuneroute_requests", "Requests by serving model and outcome.", ["model", "outcome"], registry=r
        )
        self.decisions = Counter(
            "tuneroute_decisions", "Routing decisions by chosen tier and reason.", ["tier", "reason"], registry=r
        )
        self.overhead = Histogram(
            "tuneroute_router_overhead_seconds",
            "Time spent in the router itself (not waiting on backends).",
            buckets=_FAST,
            registry=r,
        )
        self.backend = Histogram(
            "tuneroute_backend_seconds",
            "Time waiting on a backend, to headers (stream) or full body.",
            ["model"],
            buckets=_SLOW,
            registry=r,
        )
        self.classify = Histogram(
            "tuneroute_classification_seconds", "Complexity classification latency.", buckets=_FAST, registry=r
        )
        self.tokens = Counter("tuneroute_tokens", "Tokens reported by backends.", ["model", "kind"], registry=r)
        self.cost = Counter("tuneroute_cost_usd", "Estimated cost at the pool's prices.", ["model"], registry=r)
        self.saved = Counter(
            "tuneroute_cost_saved_usd", "Estimated saving against always using the strongest model.", registry=r
        )
        self.circuit_open = Gauge(
            "tuneroute_circuit_open", "1 while a backend's circuit is open.", ["model"], registry=r
        )
        self.in_flight = Gauge("tuneroute_in_flight", "Requests in flight per backend.", ["model"], registry=r)
        self.refused = Counter(
            "tuneroute_refused", "Requests refused at the router's own limits, by limit.", ["limit"], registry=r
        )
        self.reloads = Counter("tuneroute_config_reloads", "Config reload attempts.", ["result"], registry=r)
