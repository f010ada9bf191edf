"""The reconcilers called directly, as handlers.py calls them, against the real API server (and
the pure index of routes by the FineTuneJob they serve).

No operator runs (the `kube` fixture pauses any the session or the cluster has running): each test
calls reconcile.* with the operator's own Kube client and records the Events it would post. The API server, its validation and its status subresource are
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
from tuneroute_testing.control_plane import wait_until
from tuneroute_testing.k8s import apply, condition, example, get, small_finetunejob
from tuneroute_trainer.contract import API_VERSION, now

cluster = pytest.mark.cluster


class Events(list):
    """What the reconcilers would post as Events: (type, reason, message)."""

    def __call__(self, body: dict, type_: str, reason: str, message: str) -> None:
        self.append((type_, reason, message))

    def warnings(self) -> list[tuple[str, str, str]]:
        return [e for e in self if e[0] == "Warning"]


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
    assert {c["type"] for c in st["conditions"]} == {
        "Ready",
        "Running",
        "Succeeded",
        "Failed",
        "Suspended",
        "ServingVerified",
    }
    assert st["adapterName"].startswith("tiny-")
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
    with pytest.raises(reconcile.InvalidSpec, match=r"spec\.dataset\.format: method dpo needs"):
        reconcile.finetunejob(kube, Settings(), body, events)
    ftj = get(control_plane, namespace, "finetunejob", "tiny")
    assert ftj["status"]["phase"] == "Failed" and condition(ftj, "Failed")["reason"] == "InvalidSpec"
    # the field as the user wrote it in the resource: spec.dataset.format, not dataset.format
    assert (
        "invalid spec: spec.dataset.format: method dpo needs a dataset with format preference"
        in ftj["status"]["message"]
    )
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
    verified = {
        "type": "ServingVerified",
        "status": "True",
        "reason": "Verified",
        "message": "",
        "lastTransitionTime": now(),
    }
    done = {
        "status": {
            "phase": "Succeeded",
            "adapter": {**adapter, "uri": "pvc://tuneroute-adapters/adapters/qwen3-support"},
            "conditions": [verified],
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


def _job_at(phase: str, gate: str | None = None) -> dict:
    conditions = [{"type": "ServingVerified", "status": gate, "reason": "X"}] if gate else []
    status = {"phase": phase, "conditions": conditions, "adapter": {"name": "a", "path": "adapters/a"}}
    return {"metadata": {"name": "qwen3-support"}, "status": status}


def test_adapter_entries_index_the_routes_by_the_finetunejob_they_serve(route_body):
    spec = route_body["spec"]
    status = {"backendStatus": [{"name": "qwen3-support", "ready": False, "reason": "AdapterPending"}]}
    index = reconcile.adapter_entries("ml", "assistant", spec, status)
    want = reconcile.AdapterEntry("assistant", "qwen3-support", False, "AdapterPending")
    assert index == {("ml", "qwen3-support"): (want,)}
    entries = index.values()
    assert reconcile.routes_waiting_on(entries, _job_at("Running")) == []
    # trained but not verified yet: still not ready, but for another reason the route must show
    assert reconcile.routes_waiting_on(entries, _job_at("Succeeded", "Unknown")) == ["assistant"]
    assert reconcile.routes_waiting_on(entries, _job_at("Succeeded", "True")) == ["assistant"]
    unseen = reconcile.adapter_entries("ml", "assistant", spec, {}).values()  # not reconciled yet
    assert reconcile.routes_waiting_on(unseen, _job_at("Running")) == ["assistant"]


# --- children the API server refuses (issue 11, item 7) -------------------------------------------


@pytest.fixture
def refusing_policy(control_plane, namespace):
    """A cluster admin's ValidatingAdmissionPolicy that refuses a kind of child in this namespace
    (as Kyverno or Gatekeeper policies do): what the operator cannot check before applying."""
    made = []

    def refuse(resource: str, group: str, message: str) -> None:
        name = f"refuse-{resource}-{namespace}"
        match = {
            "resourceRules": [
                {
                    "apiGroups": [group],
                    "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": [resource],
                }
            ],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        }
        policy = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": match,
                "validations": [{"expression": "false", "message": message}],
            },
        }
        binding = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"]},
        }
        control_plane.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [policy, binding]})
        )
        made.append(name)
        wait_until(
            lambda: message in _dry_run_create(control_plane, namespace, resource, group), 30, "the policy to apply"
        )

    yield refuse
    for name in made:
        control_plane.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name, check=False)


def _dry_run_create(cp, namespace: str, resource: str, group: str) -> str:
    """The error of a server-side dry-run create of that kind (empty once accepted)."""
    kind = {"jobs": "job", "deployments": "deployment"}[resource]
    out = cp.kubectl(
        "-n", namespace, "create", kind, "probe", "--image=registry.example/x:1", "--dry-run=server", check=False
    )
    return out.stderr


@cluster
def test_a_job_the_api_server_refuses_fails_the_finetunejob_with_its_message_and_no_retry(
    control_plane, kube, namespace, refusing_policy
):
    """The CRD refuses what it can at admission; what still reaches a child and is refused (here a
    cluster policy refusing Jobs) ends in Failed with reason ApplyFailed, the API server's words
    and one Warning, and InvalidSpec so that kopf does not retry. The children applied before the
    Job are inert; no Job, so nothing runs."""
    events = Events()
    refusing_policy("jobs", "batch", "training Jobs need a cost-center label")
    body = _ftj(control_plane, kube, namespace)
    with pytest.raises(reconcile.InvalidSpec, match="the API server refused the Job tiny"):
        reconcile.finetunejob(kube, Settings(), body, events)
    ftj = get(control_plane, namespace, "finetunejob", "tiny")
    failed = condition(ftj, "Failed")
    assert ftj["status"]["phase"] == "Failed" and (failed["status"], failed["reason"]) == ("True", "ApplyFailed")
    assert "training Jobs need a cost-center label" in failed["message"] == ftj["status"]["message"]
    assert [e[:2] for e in events] == [("Warning", "ApplyFailed")]
    assert get(control_plane, namespace, "job", "tiny") is None

    # Failed is final: reconciling again (an operator restart's resume) tries nothing more.
    reconcile.finetunejob(kube, Settings(), kube.get(API_VERSION, "FineTuneJob", namespace, "tiny"), events)
    assert get(control_plane, namespace, "job", "tiny") is None and len(events) == 1


@cluster
def test_a_router_deployment_the_api_server_refuses_leaves_the_route_not_ready_and_says_why(
    control_plane, kube, namespace, refusing_policy
):
    cp, events = control_plane, Events()
    refusing_policy("deployments", "apps", "Deployments here need an approved router")
    apply(cp, namespace, example("20-modelroute"))
    with pytest.raises(reconcile.InvalidSpec, match="the API server refused the Deployment assistant-router"):
        reconcile.modelroute(kube, Settings(), namespace, "assistant", events)
    route = get(cp, namespace, "modelroute", "assistant")
    ready, degraded = condition(route, "Ready"), condition(route, "Degraded")
    assert (ready["status"], ready["reason"]) == ("False", "ApplyFailed")
    assert (degraded["status"], degraded["reason"]) == ("True", "ApplyFailed")
    assert "Deployments here need an approved router" in ready["message"]
    assert [e[:2] for e in events] == [("Warning", "ApplyFailed")]
    # The Deployment goes last: nothing runs with a half-written route.
    assert get(cp, namespace, "deployment", "assistant-router") is None

    cp.kubectl("delete", "validatingadmissionpolicybinding", f"refuse-deployments-{namespace}")
    wait_until(
        lambda: "approved router" not in _dry_run_create(cp, namespace, "deployments", "apps"), 30, "the policy to go"
    )
    reconcile.modelroute(kube, Settings(), namespace, "assistant", events)  # an admission change: it converges
    assert get(cp, namespace, "deployment", "assistant-router") is not None
    assert condition(get(cp, namespace, "modelroute", "assistant"), "Ready")["reason"] != "ApplyFailed"


@cluster
def test_an_existing_job_from_an_older_operator_is_suspended_without_touching_its_template(
    control_plane, kube, namespace
):
    """A Job's pod template is immutable. The operator's template changes between versions (here
    the trainer image setting): re-applying the whole Job on resume or on a suspend edit would be
    refused, so an existing Job gets only what may change."""
    cp, events = control_plane, Events()
    reconcile.finetunejob(
        kube, Settings(trainer_image="registry.example/trainer:old"), _ftj(cp, kube, namespace), events
    )
    cp.kubectl("-n", namespace, "patch", "ftj", "tiny", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    body = kube.get(API_VERSION, "FineTuneJob", namespace, "tiny")
    reconcile.finetunejob(kube, Settings(trainer_image="registry.example/trainer:new"), body, events)
    job = get(cp, namespace, "job", "tiny")
    assert job["spec"]["suspend"] is True
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/trainer:old"
    assert get(cp, namespace, "finetunejob", "tiny")["status"]["phase"] in ("Pending", "Suspended")
    assert not events.warnings()


@cluster
def test_a_job_forbidden_by_a_quota_waits_says_why_and_is_retried(control_plane, kube, namespace):
    cp, events = control_plane, Events()
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-jobs"}}
    quota["spec"] = {"hard": {"count/jobs.batch": "0"}}
    apply(cp, namespace, quota)
    body = _ftj(cp, kube, namespace)
    with pytest.raises(reconcile.ApplyForbidden, match="exceeded quota"):
        reconcile.finetunejob(kube, Settings(), body, events)
    ftj = get(cp, namespace, "finetunejob", "tiny")
    assert ftj["status"]["phase"] == "Pending" and condition(ftj, "Ready")["reason"] == "ApplyForbidden"
    assert condition(ftj, "Failed")["status"] == "False"
    assert [e[:2] for e in events] == [("Warning", "ApplyForbidden")]

    cp.kubectl("-n", namespace, "delete", "resourcequota", "no-jobs")
    reconcile.finetunejob(kube, Settings(), kube.get(API_VERSION, "FineTuneJob", namespace, "tiny"), events)
    assert get(cp, namespace, "job", "tiny") is not None


# --- finished stays finished (issue 11, item 12) -------------------------------------------------


@cluster
def test_a_finished_finetunejob_whose_job_is_gone_stays_finished_and_gets_no_new_job(control_plane, kube, namespace):
    """ttlSecondsAfterFinished deletes the Job of a finished FineTuneJob: its status must not step
    back to Pending (a route would drop the adapter), and no reconcile (an operator restart's
    resume, a suspend edit) may create a GPU Job again."""
    cp, events = control_plane, Events()
    body = _ftj(cp, kube, namespace, ttlSecondsAfterFinished=0)
    reconcile.finetunejob(kube, Settings(), body, events)
    done = {
        "status": {
            "phase": "Succeeded",
            "conditions": [],
            "adapter": {
                "name": "tiny",
                "pvc": "tuneroute-adapters",
                "path": "adapters/tiny",
                "uri": "pvc://tuneroute-adapters/adapters/tiny",
            },
        }
    }
    cp.kubectl("-n", namespace, "patch", "ftj", "tiny", "--subresource=status", "--type=merge", "-p", json.dumps(done))
    cp.kubectl("-n", namespace, "delete", "job", "tiny", "--cascade=background")  # what the TTL controller does

    reconcile.finetunejob_status(kube, namespace, "tiny", events)  # the Job's DELETED event
    assert get(cp, namespace, "finetunejob", "tiny")["status"]["phase"] == "Succeeded"
    reconcile.finetunejob(kube, Settings(), kube.get(API_VERSION, "FineTuneJob", namespace, "tiny"), events)  # resume
    cp.kubectl("-n", namespace, "patch", "ftj", "tiny", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    reconcile.finetunejob(kube, Settings(), kube.get(API_VERSION, "FineTuneJob", namespace, "tiny"), events)
    ftj = get(cp, namespace, "finetunejob", "tiny")
    assert ftj["status"]["phase"] == "Succeeded" and ftj["status"]["adapter"]["path"] == "adapters/tiny"
    assert ftj["status"]["observedGeneration"] == 2
    assert get(cp, namespace, "job", "tiny") is None


# --- two jobs, one output directory (issue 11, item 13) -------------------------------------------


def test_the_oldest_finetunejob_keeps_a_shared_output_directory():
    spec = {"output": {"pvc": "adapters", "path": "shared/./x/"}}
    assert reconcile.output_key("ml", "a", spec) == ("ml", "adapters", "shared/x")
    assert reconcile.output_key("ml", "b", {"output": {"pvc": "adapters"}}) == ("ml", "adapters", "adapters/b")
    users = [reconcile.OutputUser("2026-01-02T00:00:00Z", "new"), reconcile.OutputUser("2026-01-01T00:00:00Z", "old")]
    assert reconcile.output_owner(users).name == "old" and reconcile.output_owner([]) is None


@cluster
def test_a_finetunejob_writing_where_another_writes_fails_before_it_starts(control_plane, kube, namespace):
    cp, events = control_plane, Events()
    old = _ftj(cp, kube, namespace, "old", output={"pvc": "tuneroute-adapters", "path": "adapters/shared"})
    new = _ftj(cp, kube, namespace, "new", output={"pvc": "tuneroute-adapters", "path": "adapters/shared"})
    users = [
        reconcile.OutputUser(b["metadata"]["creationTimestamp"] + ("" if b is old else "~"), b["metadata"]["name"])
        for b in (old, new)
    ]
    reconcile.finetunejob(kube, Settings(), old, events, users)
    with pytest.raises(reconcile.InvalidSpec, match="already the output of FineTuneJob old"):
        reconcile.finetunejob(kube, Settings(), new, events, users)
    ftj = get(cp, namespace, "finetunejob", "new")
    assert ftj["status"]["phase"] == "Failed" and condition(ftj, "Failed")["reason"] == "OutputInUse"
    assert "spec.output: claim tuneroute-adapters, path adapters/shared" in ftj["status"]["message"]
    assert get(cp, namespace, "job", "new") is None and get(cp, namespace, "job", "old") is not None
