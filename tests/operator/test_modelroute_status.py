"""A ModelRoute's conditions and per-entry status from its resolved pool and router Deployment."""

from __future__ import annotations

import pytest

from tuneroute_operator.api.modelroute import ModelRouteSpec
from tuneroute_operator.builders import modelroute as build
from tuneroute_operator.builders.common import Owner
from tuneroute_operator.status import modelroute as status

VERIFIED = [{"type": "ServingVerified", "status": "True", "reason": "Verified"}]
SUCCEEDED = {
    "status": {
        "phase": "Succeeded",
        "adapter": {"name": "qwen3-support", "path": "adapters/qwen3-support"},
        "conditions": VERIFIED,
    }
}
RUNNING = {"status": {"phase": "Running"}}


def _resolved(route_body, job):
    spec = ModelRouteSpec.model_validate(route_body["spec"])
    return build.resolve(Owner.of(route_body), spec, {"qwen3-support": job})


def _deployment(available: int) -> dict:
    return {"status": {"availableReplicas": available}}


def _by_type(conds):
    return {c.type: c for c in conds}


def test_all_entries_ready_and_a_router_pod_available(route_body):
    conds = _by_type(status.conditions(_resolved(route_body, SUCCEEDED), _deployment(1), replicas=2))
    assert (conds["Ready"].status, conds["Ready"].reason) == (True, "RouterAvailable")
    assert conds["Ready"].message == "1/2 router pods ready, 4/4 backends"
    assert (conds["Degraded"].status, conds["Degraded"].reason) == (False, "AllBackendsReady")


def test_a_training_adapter_degrades_the_route_and_says_which(route_body):
    conds = _by_type(status.conditions(_resolved(route_body, RUNNING), _deployment(2), replicas=2))
    assert conds["Ready"].status is True
    assert (conds["Degraded"].status, conds["Degraded"].reason) == (True, "BackendsPending")
    assert conds["Degraded"].message == "qwen3-support: FineTuneJob qwen3-support is Running"


@pytest.mark.parametrize(
    "deployment, replicas, reason",
    [(None, 2, "RouterUnavailable"), (_deployment(0), 2, "RouterUnavailable"), (_deployment(0), 0, "ScaledToZero")],
)
def test_not_ready_until_a_router_pod_is(route_body, deployment, replicas, reason):
    conds = _by_type(status.conditions(_resolved(route_body, SUCCEEDED), deployment, replicas))
    assert (conds["Ready"].status, conds["Ready"].reason) == (False, reason)


def test_no_ready_entry_is_not_ready_with_each_entrys_reason(route_body):
    resolved = [
        build.Resolved(r.entry, None, "Waiting", f"{r.entry.name} waits") for r in _resolved(route_body, RUNNING)
    ]
    ready = _by_type(status.conditions(resolved, _deployment(2), 2))["Ready"]
    assert (ready.status, ready.reason) == (False, "NoReadyBackends")
    assert (
        ready.message
        == "no pool entry is ready: qwen3-4b waits; qwen3-30b-a3b waits; qwen3-support waits; qwen3-235b-a22b waits"
    )


def test_a_refused_config_is_not_ready_when_the_router_has_none_yet(route_body):
    refused = "policy.defaultModel: must name a pool entry"
    conds = _by_type(status.conditions(_resolved(route_body, RUNNING), None, 2, refused))
    assert (conds["Ready"].status, conds["Ready"].reason) == (False, status.CONFIG_REFUSED)
    assert refused in conds["Ready"].message
    degraded = conds["Degraded"]
    assert (degraded.status, degraded.reason) == (True, status.CONFIG_REFUSED)
    assert refused in degraded.message and "qwen3-support: FineTuneJob qwen3-support is Running" in degraded.message
    assert "previous config" not in degraded.message


def test_a_refused_config_keeps_the_routers_previous_one_and_says_so(route_body):
    refused = "policy.defaultModel: must name a pool entry"
    conds = _by_type(status.conditions(_resolved(route_body, RUNNING), _deployment(2), 2, refused))
    assert (conds["Ready"].status, conds["Ready"].reason) == (True, "RouterAvailable")
    assert conds["Degraded"].reason == status.CONFIG_REFUSED
    assert conds["Degraded"].message.endswith("; it keeps its previous config")


def test_backend_status_names_each_entry_with_its_url_once_resolved(route_body):
    rows = [b.wire() for b in status.backend_status(_resolved(route_body, RUNNING))]
    assert rows[1] == {
        "name": "qwen3-30b-a3b",
        "ready": True,
        "reason": "Resolved",
        "url": "http://vllm-qwen3-30b-a3b.ml.svc.cluster.local:8000/v1",
    }
    assert rows[2] == {"name": "qwen3-support", "ready": False, "reason": "AdapterPending"}
