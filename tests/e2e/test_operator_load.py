"""The operator under a flood of updates: what it costs is bounded by the changes, not the events.

Real API server, kwok pods, the operator as the chart's pod on the real node. The operator's own
reconcile counter (its /metrics, as a user's Prometheus reads it) measures the work each flood
caused. kwok stands in for the kubelet; the trainer's progress patches are sent as the trainer
sends them (merge patches of status.progress)."""

from __future__ import annotations

import json
import math
import time

import pytest
from kubernetes import client, config

from tuneroute_testing.control_plane import wait_until
from tuneroute_testing.k8s import (
    apply,
    condition,
    events,
    get,
    running_pod,
    small_finetunejob,
    small_route,
    wait_deployment_ready,
    wait_phase,
)

pytestmark = pytest.mark.cluster


def _reconciles(operator, kind: str) -> float:
    return sum(operator.sample("tuneroute_reconciles_total", kind=kind, result=r) for r in ("ok", "error"))


def _quiet(operator, kinds: tuple[str, ...], still: float = 3.0, timeout: float = 60) -> dict[str, float]:
    """Wait until the operator has run no reconcile of `kinds` for `still` seconds; the counts then."""
    last = {k: _reconciles(operator, k) for k in kinds}
    since = time.monotonic()
    end = since + timeout
    while time.monotonic() < end:
        time.sleep(0.5)
        now = {k: _reconciles(operator, k) for k in kinds}
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= still:
            return now
    raise TimeoutError(f"the operator kept reconciling {kinds} for {timeout} s")


def _admin(cp) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(str(cp.kubeconfig), client_configuration=cfg)
    return client.ApiClient(cfg)


def test_a_burst_of_pod_updates_costs_one_status_computation_per_second_not_one_per_event(
    control_plane, scoped, namespace, storage
):
    """A pod's watch events (here: 50 annotation updates, as a node agent or a mesh sidecar
    injector might make) change nothing the FineTuneJob's status shows: the operator coalesces
    them into about one status computation per second, writes nothing and emits no Event; a real
    change afterwards (the pod ends) is still followed."""
    cp = control_plane
    storage()
    apply(cp, namespace, small_finetunejob("busy"))
    pod = running_pod(cp, namespace, "busy")
    wait_phase(cp, namespace, "busy", "Running")
    before = _quiet(scoped, ("FineTuneJob",))["FineTuneJob"]
    ftj_version = get(cp, namespace, "finetunejob", "busy")["metadata"]["resourceVersion"]
    n_events = len(events(cp, namespace, "busy"))

    core = client.CoreV1Api(_admin(cp))
    t0 = time.monotonic()
    for i in range(50):
        core.patch_namespaced_pod(pod, namespace, {"metadata": {"annotations": {"example.com/heartbeat": str(i)}}})
    elapsed = time.monotonic() - t0
    after = _quiet(scoped, ("FineTuneJob",))["FineTuneJob"]

    # One computation per STATUS_DELAY (1 s) window of the flood, plus the one a run in progress
    # owes to the events it may have missed; one per event would be 50.
    bound = math.ceil(elapsed) + 2
    assert 1 <= after - before <= bound, (after - before, elapsed)
    assert get(cp, namespace, "finetunejob", "busy")["metadata"]["resourceVersion"] == ftj_version
    assert len(events(cp, namespace, "busy")) == n_events

    cp.finish_pod(namespace, pod, exit_code=0)
    wait_phase(cp, namespace, "busy", "Succeeded")


def test_a_flood_of_trainer_progress_reaches_kubectl_get_and_touches_no_route(
    control_plane, scoped, namespace, storage
):
    """The trainer patches status.progress every few seconds for hours. Each patch is a watch
    event of the FineTuneJob; a ModelRoute waiting for its adapter must not be reconciled (and
    the job's status not rewritten) for any of them, only when the job's phase moves."""
    cp = control_plane
    storage()
    apply(cp, namespace, small_finetunejob("qwen3-support"))
    apply(cp, namespace, small_route())  # serves qwen3-support's adapter once it exists
    pod = running_pod(cp, namespace, "qwen3-support")
    wait_phase(cp, namespace, "qwen3-support", "Running")
    wait_until(
        lambda: ((get(cp, namespace, "modelroute", "assistant") or {}).get("status") or {}).get("backends") == "3/4",
        60,
        "the route to wait for the adapter",
    )
    # Settled: the router pods really run (on the real node); their Deployment's status moves,
    # and the route with it, until both are ready.
    wait_deployment_ready(cp, namespace, "assistant-router")
    wait_until(
        lambda: (
            "2/2 router pods ready"
            in (condition(get(cp, namespace, "modelroute", "assistant"), "Ready") or {}).get("message", "")
        ),
        60,
        "the route's status to see both router pods",
    )
    before = _quiet(scoped, ("FineTuneJob", "ModelRoute"))
    n_events = {n: len(events(cp, namespace, n)) for n in ("qwen3-support", "assistant")}
    route_version = get(cp, namespace, "modelroute", "assistant")["metadata"]["resourceVersion"]

    custom = client.CustomObjectsApi(_admin(cp))
    for step in range(1, 101):
        progress = {"step": step, "totalSteps": 100, "percent": float(step), "loss": round(2.0 - step / 100, 3)}
        custom.patch_namespaced_custom_object_status(
            "tuneroute.io", "v1alpha1", namespace, "finetunejobs", "qwen3-support", {"status": {"progress": progress}}
        )
    after = _quiet(scoped, ("FineTuneJob", "ModelRoute"))

    # The counters are the operator's, shared with what earlier tests left in other namespaces
    # (a route deleted with its namespace is one more run): a handful, never one per patch.
    assert all(after[k] - before[k] <= 5 for k in after), (before, after)
    assert get(cp, namespace, "modelroute", "assistant")["metadata"]["resourceVersion"] == route_version
    assert {n: len(events(cp, namespace, n)) for n in n_events} == n_events
    row = cp.kubectl("-n", namespace, "get", "ftj", "qwen3-support", "-o", "wide").stdout
    header, cells = (line.split() for line in row.splitlines()[:2])
    assert dict(zip(header, cells))["STEP"] == "100"

    # The phase moving is what the route follows (once the serving gate verified the adapter:
    # its verdict as the verify pod reports it; test_modelroute covers the gate itself).
    cp.finish_pod(namespace, pod, exit_code=0)
    verdict = {"verified": True, "reason": "Verified", "vllmVersion": "0.32.0", "weights": {"modules": 96}}
    cp.finish_pod(
        namespace, running_pod(cp, namespace, "qwen3-support-verify"), exit_code=0, message=json.dumps(verdict)
    )
    wait_until(
        lambda: ((get(cp, namespace, "modelroute", "assistant") or {}).get("status") or {}).get("backends") == "4/4",
        60,
        "the adapter to join the route",
    )
    assert get(cp, namespace, "finetunejob", "qwen3-support")["status"]["progress"]["step"] == 100
