"""The reconcilers called directly, as handlers.py calls them, against the real API server (and
the pure index of routes by the FineTuneJob they serve).

No operator process runs: each test calls reconcile.* with the operator's own Kube client and
records the Events it would post. The API server, its validation and its status subresource are
real; the Job controller and the scheduler run too, but nothing here waits for them.
"""

from __future__ import annotations

import json

import pytest

from tuneroute_operator import reconcile
from tuneroute_operator.api.finetunejob import FineTuneJobStatus
from tuneroute_operator.settings import Settings
from tuneroute_operator.status import conditions as cond
from tuneroute_operator.status.modelroute import CONFIG_REFUSED
from tuneroute_testing.k8s import apply, condition, example, get, small_finetunejob
from tuneroute_trainer.contract import API_VERSION, now

cluster = pytest.mark.cluster


class Events(list):
    """What the reconcilers would post as Events: (type, reason, message)."""

    def __call__(self, body: dict, type_: str, reason: str, message: str) -> None:
        self.append((type_, reason, message))


def _ftj(cp, kube, namespace: str, name: str = "tiny", **spec) -> dict:
    apply(cp, namespace, small_finetunejob(name, **spec))
    return kube.get(API_VERSION, "FineTuneJob", namespace, name)


@cluster
def test_finetunejob_creates_its_children_and_a_status_for_the_generation_it_saw(control_plane, kube, namespace):
    events = Events()
    body = _ftj(control_plane, kube, namespace)
    reconcile.finetunejob(kube, Settings(), body, events)

    for kind, name in [("job", "tiny"), ("configmap", "tiny-trainer"), ("serviceaccount", "tiny-trainer")]:
        child = get(control_plane, namespace, kind, name)
        assert child and child["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"], kind
    ftj = get(control_plane, namespace, "finetunejob", "tiny")
    st = ftj["status"]
    assert st["observedGeneration"] == ftj["metadata"]["generation"] == 1
    assert st["jobName"] == "tiny" and st["phase"] in ("Pending", "Running")
    assert {c["type"] for c in st["conditions"]} == {"Ready", "Running", "Succeeded", "Failed", "Suspended"}
    assert all(c["observedGeneration"] == 1 for c in st["conditions"])
    assert [e[:2] for e in events][:1] == [("Normal", condition(ftj, "Ready")["reason"])]

    # A spec change: the next status says which generation it was computed from.
    control_plane.kubectl("-n", namespace, "patch", "ftj", "tiny", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    reconcile.finetunejob(kube, Settings(), kube.get(API_VERSION, "FineTuneJob", namespace, "tiny"), events)
    ftj = get(control_plane, namespace, "finetunejob", "tiny")
    assert ftj["metadata"]["generation"] == 2 and ftj["status"]["observedGeneration"] == 2
    assert get(control_plane, namespace, "job", "tiny")["spec"]["suspend"] is True


@cluster
def test_an_unchanged_status_is_not_written_again(control_plane, kube, namespace):
    events = Events()
    body = _ftj(control_plane, kube, namespace)
    conditions = cond.merge(None, [cond.Cond("Ready", False, "Waiting", "w")], now(), 1)
    status = FineTuneJobStatus(phase="Pending", conditions=conditions, observed_generation=1, message="w")
    reconcile._write_status(kube, events, body, status)
    written = kube.get(API_VERSION, "FineTuneJob", namespace, "tiny")
    reconcile._write_status(kube, events, written, status)
    again = kube.get(API_VERSION, "FineTuneJob", namespace, "tiny")
    assert again["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]
    assert events == [("Normal", "Waiting", "w")]  # one transition, one Event


@cluster
def test_the_status_keeps_the_trainers_progress(control_plane, kube, namespace):
    body = _ftj(control_plane, kube, namespace)
    progress = {"status": {"progress": {"step": 7, "totalSteps": 10}}}
    control_plane.kubectl(
        "-n", namespace, "patch", "ftj", "tiny", "--subresource=status", "--type=merge", "-p", json.dumps(progress)
    )
    reconcile.finetunejob(kube, Settings(), body, Events())
    st = get(control_plane, namespace, "finetunejob", "tiny")["status"]
    assert st["progress"] == {"step": 7, "totalSteps": 10} and st["jobName"] == "tiny"


@cluster
def test_a_spec_the_operator_cannot_use_fails_once_with_the_field_named(control_plane, kube, namespace):
    """A stored spec that today's rules refuse (the API server would refuse it as new): a Failed
    status and one Warning, no children, and InvalidSpec so that the handler does not retry."""
    events = Events()
    body = _ftj(control_plane, kube, namespace)
    body["spec"]["method"] = "dpo"  # with a chat dataset
    with pytest.raises(reconcile.InvalidSpec, match=r"dataset\.format: method dpo needs"):
        reconcile.finetunejob(kube, Settings(), body, events)
    ftj = get(control_plane, namespace, "finetunejob", "tiny")
    assert ftj["status"]["phase"] == "Failed" and condition(ftj, "Failed")["reason"] == "InvalidSpec"
    assert "dataset.format: method dpo needs a dataset with format preference" in ftj["status"]["message"]
    assert [e[:2] for e in events] == [("Warning", "InvalidSpec")]
    assert get(control_plane, namespace, "job", "tiny") is None


@cluster
def test_a_route_whose_policy_counts_on_a_training_adapter_waits_and_says_why(control_plane, kube, namespace):
    """The policy names the adapter as its default model while the adapter trains: the router
    would refuse that config, so none is written and the route says why (one Warning). Once the
    FineTuneJob succeeds, the same policy, untouched, goes into the router config."""
    cp, events = control_plane, Events()
    _ftj(cp, kube, namespace, "qwen3-support")
    route = example("20-modelroute")
    route["spec"]["policy"]["defaultModel"] = "qwen3-support"
    apply(cp, namespace, route)
    reconcile.modelroute(kube, Settings(), namespace, "assistant", events)

    mroute = get(cp, namespace, "modelroute", "assistant")
    ready, degraded = condition(mroute, "Ready"), condition(mroute, "Degraded")
    assert (ready["status"], ready["reason"]) == ("False", CONFIG_REFUSED)
    assert (degraded["status"], degraded["reason"]) == ("True", CONFIG_REFUSED)
    assert "policy.defaultModel: must name a pool entry" in degraded["message"]
    assert "qwen3-support: FineTuneJob qwen3-support is" in degraded["message"]
    assert get(cp, namespace, "configmap", "assistant-router") is None
    assert [e[:2] for e in events] == [("Warning", CONFIG_REFUSED)]
    assert mroute["status"]["backends"] == "3/4" and mroute["status"]["observedGeneration"] == 1

    adapter = {"name": "qwen3-support", "pvc": "tuneroute-adapters", "path": "adapters/qwen3-support"}
    done = {
        "status": {
            "phase": "Succeeded",
            "adapter": {**adapter, "uri": "pvc://tuneroute-adapters/adapters/qwen3-support"},
        }
    }
    cp.kubectl(
        "-n", namespace, "patch", "ftj", "qwen3-support", "--subresource=status", "--type=merge", "-p", json.dumps(done)
    )
    reconcile.modelroute(kube, Settings(), namespace, "assistant", events)
    mroute = get(cp, namespace, "modelroute", "assistant")
    assert condition(mroute, "Degraded")["status"] == "False" and mroute["status"]["backends"] == "4/4"
    config = get(cp, namespace, "configmap", "assistant-router")["data"]["router.yaml"]
    assert "defaultModel: qwen3-support" in config


def test_adapter_entries_index_the_routes_by_the_finetunejob_they_serve(route_body):
    spec = route_body["spec"]
    status = {"backendStatus": [{"name": "qwen3-support", "ready": False}]}
    index = reconcile.adapter_entries("ml", "assistant", spec, status)
    assert index == {("ml", "qwen3-support"): (reconcile.AdapterEntry("assistant", "qwen3-support", False),)}
    entries = index.values()
    assert reconcile.routes_waiting_on(entries, {"status": {"phase": "Succeeded"}}) == ["assistant"]
    assert reconcile.routes_waiting_on(entries, {"status": {"phase": "Running"}}) == []
    unseen = reconcile.adapter_entries("ml", "assistant", spec, {}).values()  # not reconciled yet
    assert reconcile.routes_waiting_on(unseen, {"status": {"phase": "Running"}}) == ["assistant"]
