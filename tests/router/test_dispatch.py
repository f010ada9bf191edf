"""The dispatcher alone: retries, queueing on a busy backend, open circuits, the in-flight gauge
and the streaming relay, against real HTTP backends (tuneroute_testing.fake_backend, standing in
for vLLM, which needs a GPU)."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from tuneroute_router.config import Dispatch, PoolModel
from tuneroute_router.dispatch import Backend, Dispatcher, Failed, Served
from tuneroute_router.metrics import Metrics
from tuneroute_router.relay import relay

BODY = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def fakes(backends):
    """The module's two fake backends, reset after each test."""
    yield backends
    for b in backends:
        b.control(fail_status=0, delay_s=0.0, break_stream=False)


@pytest.fixture
async def dispatcher():
    async with aiohttp.ClientSession() as session:
        yield Dispatcher(session, Metrics())


def _backend(fake, name: str | None = None, dispatch: Dispatch | None = None, **model) -> Backend:
    m = PoolModel(name=name or fake.name, url=fake.url, tier=1, context_window=4096, **model)
    return Backend(m, dispatch or Dispatch())


def _in_flight(d: Dispatcher, name: str) -> float:
    return d.metrics.registry.get_sample_value("tuneroute_in_flight", {"model": name}) or 0.0


async def test_retries_cap_the_attempts(dispatcher, fakes):
    """retries: 1 means two attempts, however many candidates there are."""
    small, _ = fakes
    small.control(fail_status=500)
    before = small.stats()["requests"]
    candidates = [_backend(small, f"copy-{i}") for i in range(4)]
    result = await dispatcher.send(candidates, BODY, "/chat/completions", False, Dispatch(retries=1))
    assert isinstance(result, Failed) and (result.status, result.attempts) == (500, 2)
    assert small.stats()["requests"] - before == 2
    assert result.last_model == "copy-1"


async def test_the_last_candidate_at_its_limit_is_queued_on_then_busy_is_a_503(dispatcher, fakes):
    small, _ = fakes
    b = _backend(small, max_concurrency=1)
    d = Dispatch(connect_timeout_seconds=0.5)
    assert await b.gate.enter(0)  # another request holds the only slot

    async def free_the_slot_soon() -> None:
        await asyncio.sleep(0.1)
        b.gate.leave()

    freeing = asyncio.create_task(free_the_slot_soon())
    queued = await dispatcher.send([b], BODY, "/chat/completions", False, d)
    await freeing
    assert isinstance(queued, Served) and queued.status == 200  # it waited for the slot

    assert await b.gate.enter(0)
    busy = await dispatcher.send([b], BODY, "/chat/completions", False, d)
    assert isinstance(busy, Failed) and busy.status == 503 and busy.attempts == 0
    assert orjson.loads(busy.body)["error"]["code"] == "backend_busy"
    b.gate.leave()


async def test_as_many_wait_as_run_and_a_flood_beyond_is_refused_at_once(dispatcher, fakes):
    """Waiting requests were unbounded: a flood piled up in memory behind one busy backend.
    maxConcurrency 2: two run, two wait for a slot, the rest get a 503 at once (Retry-After: 1)."""
    small, _ = fakes
    small.control(delay_s=0.5)
    b = _backend(small, max_concurrency=2)
    d = Dispatch(connect_timeout_seconds=5)
    results = await asyncio.gather(*[dispatcher.send([b], BODY, "/chat/completions", False, d) for _ in range(8)])
    served = [r for r in results if isinstance(r, Served)]
    refused = [r for r in results if isinstance(r, Failed)]
    assert len(served) == 4 and all(r.status == 200 for r in served)
    assert len(refused) == 4
    assert all((r.status, r.attempts, r.retry_after) == (503, 0, 1) for r in refused)
    assert (b.gate.in_flight, b.gate.waiting) == (0, 0)


async def test_retries_end_at_the_requests_deadline_and_a_cut_attempt_opens_no_circuit(dispatcher, fakes):
    """Each attempt had its own timeout and nothing bounded their sum: two slow backends with a
    300 s timeout each kept a client waiting up to 600 s. totalTimeoutSeconds ends it with a 504."""
    small, large = fakes
    small.control(delay_s=2.0)
    before = large.stats()["requests"]
    d = Dispatch(total_timeout_seconds=1.0, failure_threshold=1)
    candidates = [_backend(small, timeout_seconds=30), _backend(large, timeout_seconds=30)]
    result = await dispatcher.send(candidates, BODY, "/chat/completions", False, d)
    assert isinstance(result, Failed) and (result.status, result.attempts) == (504, 1)
    assert orjson.loads(result.body)["error"]["code"] == "deadline_exceeded"
    assert large.stats()["requests"] == before  # no time left to fall back
    assert candidates[0].circuit.state == "closed"  # the backend did not fail its own timeout


async def test_every_circuit_open_is_a_503_and_no_backend_is_tried(dispatcher, fakes):
    small, large = fakes
    d = Dispatch(failure_threshold=1, cooldown_seconds=60)
    candidates = [_backend(small, dispatch=d), _backend(large, dispatch=d)]
    for b in candidates:
        b.circuit.failure()
    before = small.stats()["requests"] + large.stats()["requests"]
    result = await dispatcher.send(candidates, BODY, "/chat/completions", False, d)
    assert isinstance(result, Failed) and (result.status, result.attempts, result.last_model) == (503, 0, None)
    assert orjson.loads(result.body)["error"]["code"] == "no_backend_available"
    assert small.stats()["requests"] + large.stats()["requests"] == before


async def test_a_stream_holds_its_slot_until_the_relay_ends(dispatcher, fakes):
    small, _ = fakes
    b = _backend(small)
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    served = await dispatcher.send([b], body, "/chat/completions", True, Dispatch())
    assert isinstance(served, Served) and served.body is None
    assert (b.gate.in_flight, _in_flight(dispatcher, "small")) == (1, 1)
    ended = []
    chunks = [c async for c in relay(served, dispatcher, lambda *a: ended.append(a))]
    assert b"".join(chunks).endswith(b"data: [DONE]\n\n")
    ((usage, broken, seconds),) = ended
    assert (usage.prompt, usage.completion, broken) == (10, 3, False) and seconds >= 0
    assert (b.gate.in_flight, _in_flight(dispatcher, "small")) == (0, 0)


async def test_a_stream_that_breaks_counts_against_the_backend_and_is_not_hidden(dispatcher, fakes):
    small, _ = fakes
    small.control(break_stream=True)
    b = _backend(small)
    served = await dispatcher.send([b], {**BODY, "stream": True}, "/chat/completions", True, Dispatch())
    assert isinstance(served, Served)
    ended = []
    with pytest.raises(aiohttp.ClientError):
        async for _ in relay(served, dispatcher, lambda *a: ended.append(a)):
            pass
    assert ended[0][1] is True and b.circuit.failures == 1 and b.gate.in_flight == 0
