"""The Coalescer: a burst of watch events for one FineTuneJob costs one status computation.

A training pod sends several events within a second of starting (and a Job as many); at a
thousand jobs, one status computation per event kept the operator busy for minutes. These tests
drive the Coalescer directly with counting work functions (no API server needed)."""

from __future__ import annotations

import asyncio
from collections import Counter

from tuneroute_operator.coalesce import Coalescer

DELAY = 0.05


async def settled(c: Coalescer, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while c.pending():
        assert loop.time() < end, "the coalescer never settled"
        await asyncio.sleep(0.01)


async def test_a_burst_of_requests_runs_the_work_once_per_object():
    runs: Counter = Counter()

    async def work(key):
        runs[key] += 1

    c = Coalescer(work, delay=DELAY, limit=4)
    for _ in range(100):
        c.request("job-a")
    for _ in range(10):
        c.request("job-b")
    await settled(c)
    assert runs == {"job-a": 1, "job-b": 1}


async def test_requests_during_a_run_cause_exactly_one_more_run_after_it():
    """The run may have read the state before the later events: one more run sees them."""
    started, release = asyncio.Event(), asyncio.Event()
    runs = 0

    async def work(key):
        nonlocal runs
        runs += 1
        started.set()
        await release.wait()

    c = Coalescer(work, delay=DELAY, limit=4)
    c.request("job-a")
    await asyncio.wait_for(started.wait(), 5)
    for _ in range(20):
        c.request("job-a")
    release.set()
    await settled(c)
    assert runs == 2


async def test_runs_for_different_objects_are_bounded_overall_and_one_at_a_time_per_object():
    running: set = set()
    most = 0
    runs: Counter = Counter()

    async def work(key):
        nonlocal most
        assert key not in running, "two runs of one object at once"
        running.add(key)
        most = max(most, len(running))
        await asyncio.sleep(0.02)
        running.discard(key)
        runs[key] += 1

    c = Coalescer(work, delay=DELAY, limit=3)
    for i in range(12):
        c.request(f"job-{i}")
    await settled(c)
    assert most == 3 and runs == {f"job-{i}": 1 for i in range(12)}


async def test_a_failed_run_is_retried_rather_than_lost():
    runs = 0

    async def work(key):
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("API server unavailable")

    c = Coalescer(work, delay=DELAY, limit=4, retry_delay=DELAY)
    c.request("job-a")
    await settled(c)
    assert runs == 2


async def test_a_retry_waits_as_long_as_the_failure_asks():
    """kopf.TemporaryError(delay=60) (e.g. a quota refused the Job): not retried every 5 s."""
    import kopf

    runs = 0

    async def work(key):
        nonlocal runs
        runs += 1
        raise kopf.TemporaryError("forbidden by a quota", delay=3600)

    c = Coalescer(work, delay=DELAY, limit=4, retry_delay=DELAY)
    c.request("job-a")
    await asyncio.sleep(0.5)
    assert runs == 1 and c.pending() == 1  # waiting for its retry, an hour away


def test_the_status_index_holds_the_training_pods_not_the_verify_pods():
    """The verify Job's pods carry the FineTuneJob's label too; a Running verify pod of a
    re-created job's predecessor must not make the new one read as Running."""
    from tuneroute_operator.handlers import training_pods

    label = {"tuneroute.io/finetunejob": "tiny", "app.kubernetes.io/managed-by": "tuneroute-operator"}
    status = {"phase": "Running", "hostIP": "10.0.0.1"}
    trained = training_pods(namespace="ml", name="tiny-abc", labels={**label, "job-name": "tiny"}, status=status)
    assert trained == {("ml", "tiny"): {"metadata": {"name": "tiny-abc"}, "status": {"phase": "Running"}}}
    verify = {**label, "job-name": "tiny-verify"}
    assert training_pods(namespace="ml", name="tiny-verify-x", labels=verify, status=status) == {}
