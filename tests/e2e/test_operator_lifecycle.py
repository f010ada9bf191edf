"""The operator survives restarts and crashes without duplicating work, and reports metrics.

The operator is the chart's pod on the real node: a restart deletes the pod (SIGTERM, a new
pod), a crash is a SIGKILL of its process from the node's host (the kubelet restarts it)."""

from __future__ import annotations

import pytest
import yaml

from tuneroute_testing.k8s import (
    apply,
    condition,
    created,
    small_finetunejob,
    small_route,
    wait_deployment_ready,
    watch,
    watch_one,
)
from tuneroute_testing.operator_process import OperatorProcess
from tuneroute_testing.process import wait_until

pytestmark = pytest.mark.cluster


def _versions(cp, namespace):
    objs = cp.get(
        "jobs,configmaps,deployments,services,roles",
        "-n",
        namespace,
        "-l",
        "app.kubernetes.io/managed-by=tuneroute-operator",
    )["items"]
    return {(o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"] for o in objs}


def _reconciles(op: OperatorProcess, kind: str) -> float:
    return op.sample("tuneroute_reconciles_total", kind=kind, result="ok")


def test_reconciling_again_after_a_restart_changes_nothing(control_plane, scoped, namespace):
    cp = control_plane
    apply(cp, namespace, small_finetunejob("steady"))
    apply(cp, namespace, small_route())
    created(cp, "jobs", namespace, "steady")
    created(cp, "services", namespace, "assistant-router")
    # Settled: the router pods really run, so their Deployment's status and the route's status
    # move until both pods are ready.
    wait_deployment_ready(cp, namespace, "assistant-router")
    watch_one(
        cp,
        "modelroutes.tuneroute.io",
        namespace,
        "assistant",
        lambda r: "2/2 router pods ready" in (condition(r, "Ready") or {}).get("message", ""),
        what="the route's status to see both router pods",
    )
    before = _versions(cp, namespace)
    assert len(before) == 6  # Job, 2 ConfigMaps (trainer, router), Deployment, Service, Role

    scoped.stop()
    scoped.start()
    # The restarted operator (its counters start at 0, and it sees this namespace only) resumes
    # both objects: it has reconciled them once each kind's count moves.
    wait_until(
        lambda: _reconciles(scoped, "FineTuneJob") >= 1 and _reconciles(scoped, "ModelRoute") >= 1,
        60,
        "the resume reconciles of this test's objects",
    )
    assert _versions(cp, namespace) == before


def test_an_operator_killed_mid_reconcile_finishes_every_finetunejob_after_a_restart(control_plane, scoped, namespace):
    """SIGKILL while a burst of FineTuneJobs is being reconciled, as soon as the first Job
    appears: the restarted operator creates the rest, each FineTuneJob ends up with one whole set
    of children (server-side apply of fixed names makes a second set impossible; what can go
    wrong is a set left half-made), and the Job runs the config its ConfigMap holds."""
    cp = control_plane
    names = [f"burst-{i}" for i in range(16)]
    cp.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump_all([small_finetunejob(n) for n in names]))
    partial = watch(cp, "jobs", namespace, lambda jobs: len(jobs), what="the first Job")
    scoped.kill()
    at_kill = len(cp.get("jobs", "-n", namespace)["items"])
    assert at_kill < len(names), "the operator had finished before the kill: nothing was in flight"
    scoped.start()

    jobs = watch(cp, "jobs", namespace, lambda jobs: len(jobs) == len(names) and jobs, timeout=90, what="every Job")
    assert sorted(j["metadata"]["ownerReferences"][0]["name"] for j in jobs.values()) == sorted(names)
    trainer = "app.kubernetes.io/name=tuneroute-trainer"
    for resource in ("configmaps", "serviceaccounts", "roles", "rolebindings"):
        got = sorted(o["metadata"]["name"] for o in cp.get(resource, "-n", namespace, "-l", trainer)["items"])
        assert got == sorted(f"{n}-trainer" for n in names), (
            f"{resource} (first Job at {partial}, {at_kill} at the kill)"
        )
    hashes = {
        c["metadata"]["name"]: c["metadata"]["annotations"]["tuneroute.io/config-hash"]
        for c in cp.get("configmaps", "-n", namespace, "-l", trainer)["items"]
    }
    for name, job in jobs.items():
        assert job["metadata"]["annotations"]["tuneroute.io/config-hash"] == hashes[f"{name}-trainer"]


def test_metrics_count_reconciles_and_their_durations(control_plane, scoped, namespace):
    assert _reconciles(scoped, "FineTuneJob") == 0  # a fresh operator, an empty namespace
    apply(control_plane, namespace, small_finetunejob("counted"))
    created(control_plane, "jobs", namespace, "counted")
    wait_until(lambda: _reconciles(scoped, "FineTuneJob") >= 1, 30, "the reconcile to be counted")
    assert scoped.sample("tuneroute_reconcile_duration_seconds_count", kind="FineTuneJob") >= 1


def test_two_peered_replicas_never_both_act(control_plane, release, namespace, tmp_path):
    """kopf peering: the replica with the lower priority pauses while the higher one lives.

    Two operator processes on this machine (a pod cannot be given its priority), configured
    with the release's images like the chart's pod, which also acts on this namespace."""
    cp = control_plane
    apply(cp, namespace, {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "tuneroute"}})
    env = {
        "TUNEROUTE_PEERING": "tuneroute",
        "TUNEROUTE_NAMESPACES": namespace,
        "TUNEROUTE_TRAINER_IMAGE": release.images["trainer"],
        "TUNEROUTE_ROUTER_IMAGE": release.images["router"],
    }
    low = OperatorProcess(cp.kubeconfig, tmp_path / "low.log", {**env, "TUNEROUTE_PRIORITY": "100"}).start()
    high = OperatorProcess(cp.kubeconfig, tmp_path / "high.log", {**env, "TUNEROUTE_PRIORITY": "200"}).start()
    try:
        wait_until(lambda: "Pausing operations in favour" in low.log_tail(200), 60, "the low-priority replica to pause")
        apply(cp, namespace, small_finetunejob("peered"))
        wait_until(
            lambda: "Handler 'finetunejob' succeeded" in high.log_tail(400), 60, "the high-priority replica to act"
        )
        assert "Handler 'finetunejob'" not in low.log_tail(400)
    finally:
        high.stop()
        low.stop()
