"""Token usage, cost at the pool's prices, and the saving against the strongest model."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import orjson

from .config import PoolModel
from .metrics import Metrics


@dataclass(frozen=True)
class Usage:
    prompt: int = 0
    completion: int = 0


def _usage(obj: object) -> Usage:
    u = (obj.get("usage") if isinstance(obj, dict) else None) or {}
    return Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))


def usage_of_body(body: bytes) -> Usage:
    """Usage from a JSON response (nothing when it has none or is not JSON)."""
    with contextlib.suppress(orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
        return _usage(orjson.loads(body))
    return Usage()


def usage_of_stream(tail: bytes) -> Usage:
    """Usage from the last SSE event that carries one (present when the client asked for it)."""
    for line in reversed(tail.split(b"\n")):
        if line.startswith(b"data:") and b'"usage"' in line:
            with contextlib.suppress(orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
                return _usage(orjson.loads(line[5:]))
            return Usage()
    return Usage()


def cost(m: PoolModel, u: Usage) -> float:
    """USD at the model's prices."""
    return (u.prompt * m.pricing.input_per_million + u.completion * m.pricing.output_per_million) / 1e6


def strongest(pool: list[PoolModel]) -> PoolModel:
    """The baseline for "cost saved": the highest tier, the dearest within it."""
    return max(pool, key=lambda m: (m.tier, m.pricing.input_per_million + m.pricing.output_per_million))


class Accounting:
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def record(self, served: PoolModel, baseline: PoolModel, u: Usage, outcome: str) -> None:
        """One finished request: its outcome, tokens, cost, and what it saved against `baseline`."""
        m = self.metrics
        m.requests.labels(served.name, outcome).inc()
        if not (u.prompt or u.completion):
            return
        m.tokens.labels(served.name, "prompt").inc(u.prompt)
        m.tokens.labels(served.name, "completion").inc(u.completion)
        spent = cost(served, u)
        m.cost.labels(served.name).inc(spent)
        saved = cost(baseline, u) - spent
        if saved > 0:
            m.saved.inc(saved)
