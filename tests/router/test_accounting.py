"""Token usage from answers and streams, cost at the pool's prices, and the metrics they feed."""

from __future__ import annotations

import orjson
import pytest

from tuneroute_router.accounting import Accounting, Usage, cost, strongest, usage_of_body, usage_of_stream
from tuneroute_router.config import parse_config
from tuneroute_router.metrics import Metrics

POOL = parse_config(
    {
        "pool": [
            {"name": "small", "url": "http://s/v1", "tier": 1, "contextWindow": 1, "pricing": {"inputPerMillion": 1, "outputPerMillion": 2}},
            {"name": "big-cheap", "url": "http://c/v1", "tier": 2, "contextWindow": 1, "pricing": {"inputPerMillion": 3}},
            {"name": "big", "url": "http://b/v1", "tier": 2, "contextWindow": 1, "pricing": {"inputPerMillion": 10, "outputPerMillion": 30}},
        ]
    }
).pool  # fmt: skip


def test_usage_from_a_json_answer():
    body = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}})
    assert usage_of_body(body) == Usage(12, 5)
    assert usage_of_body(b'{"choices": []}') == Usage()
    assert usage_of_body(b"not json") == Usage()


def test_usage_from_the_last_event_of_a_stream_that_carries_one():
    tail = (
        b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n'
        b'data: {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}\n\n'
        b"data: [DONE]\n\n"
    )
    assert usage_of_stream(tail) == Usage(7, 2)
    assert usage_of_stream(b"data: [DONE]\n\n") == Usage()
    assert usage_of_stream(b'data: {"usage": broken\n\n') == Usage()


def test_cost_is_at_the_models_prices_per_million_tokens():
    assert cost(POOL[0], Usage(1_000_000, 500_000)) == pytest.approx(1 + 1)
    assert cost(POOL[2], Usage(10, 3)) == pytest.approx((10 * 10 + 3 * 30) / 1e6)


def test_the_baseline_is_the_dearest_model_of_the_highest_tier():
    assert strongest(POOL).name == "big"


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_request_counts_its_tokens_cost_and_saving():
    metrics = Metrics()
    Accounting(metrics).record(POOL[0], POOL[2], Usage(10, 3), "ok")
    assert _sample(metrics, "tuneroute_requests_total", model="small", outcome="ok") == 1
    assert _sample(metrics, "tuneroute_tokens_total", model="small", kind="prompt") == 10
    assert _sample(metrics, "tuneroute_tokens_total", model="small", kind="completion") == 3
    assert _sample(metrics, "tuneroute_cost_usd_total", model="small") == pytest.approx((10 * 1 + 3 * 2) / 1e6)
    saved = (10 * 10 + 3 * 30 - (10 * 1 + 3 * 2)) / 1e6
    assert _sample(metrics, "tuneroute_cost_saved_usd_total") == pytest.approx(saved)


def test_no_usage_counts_the_request_only_and_serving_the_baseline_saves_nothing():
    metrics = Metrics()
    Accounting(metrics).record(POOL[2], POOL[2], Usage(10, 3), "ok")
    Accounting(metrics).record(POOL[0], POOL[2], Usage(), "stream_broken")
    assert _sample(metrics, "tuneroute_cost_saved_usd_total") == 0
    assert _sample(metrics, "tuneroute_requests_total", model="small", outcome="stream_broken") == 1
    assert _sample(metrics, "tuneroute_cost_usd_total", model="small") == 0
