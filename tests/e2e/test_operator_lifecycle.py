"""The operator survives restarts and crashes without duplicating work, and reports metrics."""

from __future__ import annotations

import json

import pytest
import yaml

from tuneroute_testing.control_plane import wait_until
from tuneroute_testing.k8s import apply, example, get, small_finetunejob
from tuneroute_testing.operator_process import OperatorProcess

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


def test_reconciling_again_after_a_restart_changes_nothing(control_plane, operator, namespace):
    cp = control_plane
    apply(cp, namespace, small_finetunejob("steady"))
    apply(cp, namespace, example("20-modelroute"))
    wait_until(
        lambda: get(cp, namespace, "job", "steady") and get(cp, namespace, "service", "assistant-router"),
        60,
        "children",
    )
    wait_until(
        lambda: (get(cp, namespace, "modelroute", "assistant").get("status") or {}).get("backends"), 60, "route status"
    )
    before = _versions(cp, namespace)
    assert len(before) == 6  # Job, 2 ConfigMaps (trainer, router), Deployment, Service, Role

    operator.stop()
    operator.start()
    # The restarted operator resumes both objects: wait until it has reconciled them.
    wait_until(
        lambda: (
            operator.sample("tuneroute_reconciles_total", kind="FineTuneJob", result="ok") >= 1
            and operator.sample("tuneroute_reconciles_total", kind="ModelRoute", result="ok") >= 1
        ),
        60,
        "resume reconciles",
    )
    assert _versions(cp, namespace) == before


def test_an_operator_killed_mid_reconcile_leaves_exactly_one_job_per_finetunejob(control_plane, operator, namespace):
    cp = control_plane
    names = [f"burst-{i}" for i in range(12)]
    cp.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump_all([small_finetunejob(n) for n in names]))
    # Kill -9 as soon as the first Job appears: the rest are mid-flight.
    wait_until(lambda: cp.get("jobs", "-n", namespace)["items"], 60, "the first Job")
    operator.kill()
    partial = len(cp.get("jobs", "-n", namespace)["items"])
    operator.start()

    def all_created():
        return len(cp.get("jobs", "-n", namespace)["items"]) >= len(names)

    wait_until(all_created, 90, "a Job for every FineTuneJob")
    jobs = cp.get("jobs", "-n", namespace)["items"]
    owners = [j["metadata"]["ownerReferences"][0]["name"] for j in jobs]
    assert sorted(owners) == sorted(names), f"{partial} Jobs existed at the kill"
    configmaps = [
        c["metadata"]["name"]
        for c in cp.get("configmaps", "-n", namespace, "-l", "app.kubernetes.io/name=tuneroute-trainer")["items"]
    ]
    assert sorted(configmaps) == sorted(f"{n}-trainer" for n in names)


def test_metrics_count_reconciles_and_their_durations(operator, control_plane, namespace):
    apply(control_plane, namespace, small_finetunejob("counted"))
    wait_until(lambda: get(control_plane, namespace, "job", "counted"), 60, "the Job")
    assert operator.sample("tuneroute_reconciles_total", kind="FineTuneJob", result="ok") >= 1
    assert operator.sample("tuneroute_reconcile_duration_seconds_count", kind="FineTuneJob") >= 1


def test_two_peered_replicas_never_both_act(control_plane, release, namespace, tmp_path):
    """kopf peering: the replica with the lower priority pauses while the higher one lives."""
    cp = control_plane
    cp.kubectl(
        "-n",
        namespace,
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "tuneroute"}}),
    )
    env = {"TUNEROUTE_PEERING": "tuneroute", "TUNEROUTE_NAMESPACES": namespace}
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
