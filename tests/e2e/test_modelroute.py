"""ModelRoute end to end: the router Deployment, Service and config, and the loop from a
FineTuneJob's adapter into the route. The router pods really run (the router image, on the
real node): a route is Ready once they are; test_route_serves_through_router.py sends them
requests."""

from __future__ import annotations

import json

import pytest
import yaml

from tuneroute_router.config import parse_config
from tuneroute_testing.k8s import (
    REPO,
    apply,
    condition,
    created,
    get,
    running_pod,
    small_finetunejob,
    small_route,
    wait_children_gone,
    wait_events,
    watch_one,
)
from tuneroute_testing.process import wait_until

pytestmark = pytest.mark.cluster


def _route_status(cp, namespace, name, predicate, what, timeout=60):
    return watch_one(
        cp, "modelroutes.tuneroute.io", namespace, name, lambda r: predicate(r.get("status") or {}), timeout, what
    )


def _router_config(cp, namespace, name):
    cm = get(cp, namespace, "configmap", f"{name}-router")
    return parse_config(yaml.safe_load(cm["data"]["router.yaml"]))


def test_route_deploys_a_probed_router_and_service_and_reports_pending_backends(control_plane, operator, namespace):
    cp = control_plane
    apply(cp, namespace, small_route())
    route = _route_status(
        cp,
        namespace,
        "assistant",
        lambda s: (condition({"status": s}, "Ready") or {}).get("status") == "True",
        "the route to be Ready",
    )

    dep = get(cp, namespace, "deployment", "assistant-router")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert dep["spec"]["replicas"] == 2
    assert dep["metadata"]["annotations"]["tuneroute.io/config-hash"] == route["status"]["configHash"]
    svc = get(cp, namespace, "service", "assistant-router")
    assert svc["spec"]["ports"][0]["port"] == 80 and svc["spec"]["ports"][0]["targetPort"] == "http"

    config = _router_config(cp, namespace, "assistant")
    assert config.virtual_model == "auto"
    assert [m.name for m in config.pool] == ["qwen3-4b", "qwen3-30b-a3b", "qwen3-235b-a22b"]
    assert config.by_name("qwen3-4b").url == f"http://vllm-qwen3-4b.{namespace}.svc.cluster.local:8000/v1"

    st = route["status"]
    assert (st["readyBackends"], st["totalBackends"], st["backends"]) == (3, 4, "3/4")
    assert st["endpoint"] == f"http://assistant-router.{namespace}.svc.cluster.local/v1"
    degraded = condition(route, "Degraded")
    assert degraded["status"] == "True" and "qwen3-support" in degraded["message"]
    row = cp.kubectl("-n", namespace, "get", "mroute", "assistant", "--no-headers").stdout.split()
    assert row[1:4] == ["True", "3/4", st["endpoint"]]


def test_route_serves_the_adapter_once_its_finetunejob_succeeds(control_plane, operator, namespace, storage):
    cp = control_plane
    storage()
    ftj = small_finetunejob("qwen3-support")
    apply(cp, namespace, ftj)
    apply(cp, namespace, small_route())
    _route_status(cp, namespace, "assistant", lambda s: s.get("backends") == "3/4", "3/4 backends while training")
    assert _router_config(cp, namespace, "assistant").by_name("qwen3-support") is None

    cp.finish_pod(namespace, running_pod(cp, namespace, "qwen3-support"), exit_code=0)

    def verifying(s):
        entry = next((b for b in s.get("backendStatus") or [] if b["name"] == "qwen3-support"), {})
        return entry.get("reason") == "AdapterVerifying" and s.get("backends") == "3/4"

    _route_status(cp, namespace, "assistant", verifying, "the adapter to wait for the gate")
    # The parity gate's verdict, as the verify pod reports it (test_serving_gate runs the real gate).
    verdict = {"verified": True, "reason": "Verified", "vllmVersion": "0.32.0", "weights": {"modules": 96}}
    cp.finish_pod(
        namespace, running_pod(cp, namespace, "qwen3-support-verify"), exit_code=0, message=json.dumps(verdict)
    )
    wait_until(
        lambda: condition(get(cp, namespace, "finetunejob", "qwen3-support"), "ServingVerified")["status"] == "True",
        60,
        "ServingVerified=True",
    )
    route = _route_status(
        cp, namespace, "assistant", lambda s: s.get("backends") == "4/4", "the adapter to join the route"
    )
    assert condition(route, "Degraded")["status"] == "False"
    entry = _router_config(cp, namespace, "assistant").by_name("qwen3-support")
    base = _router_config(cp, namespace, "assistant").by_name("qwen3-30b-a3b")
    assert entry.url == base.url  # served by the base model's vLLM
    name = get(cp, namespace, "finetunejob", "qwen3-support")["status"]["adapterName"]
    assert entry.backend_model == name and name.startswith("qwen3-support-")
    assert (entry.adapter.name, entry.adapter.path) == (name, f"/adapters/adapters/{name}")


def test_a_stored_spec_the_router_refuses_sets_a_failed_condition_once(control_plane, scoped, namespace):
    """A route stored before a CRD upgrade tightened the rules (here: example prompts for a tier
    no pool entry has) reaches the operator; the route's rules refuse it, and the route says so
    once (condition + one Warning event) with no retries and no router config."""
    cp = control_plane
    crd = cp.get("crd", "modelroutes.tuneroute.io")
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["x-kubernetes-validations"] = [
        r for r in spec_schema["x-kubernetes-validations"] if "examples" not in r["rule"]
    ]
    for key in ("resourceVersion", "managedFields", "uid", "creationTimestamp", "generation"):
        crd["metadata"].pop(key, None)
    crd.pop("status", None)
    cp.kubectl("replace", "-f", "-", input=json.dumps(crd))  # the older, looser CRD
    route = small_route()
    route["spec"]["policy"]["examples"] = [{"tier": 7, "prompts": ["hello"]}]
    try:
        # The API server swaps in the replaced schema asynchronously, with nothing to watch.
        wait_until(
            lambda: (
                cp.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(route), check=False).returncode == 0
            ),
            30,
            "the looser CRD",
        )
    finally:
        cp.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds" / "tuneroute.io_modelroutes.yaml")
        )
    route = _route_status(
        cp,
        namespace,
        "assistant",
        lambda s: (condition({"status": s}, "Ready") or {}).get("reason") == "InvalidSpec",
        "InvalidSpec",
    )
    assert "policy.examples" in condition(route, "Ready")["message"]
    assert get(cp, namespace, "configmap", "assistant-router") is None
    # kopf records a spec as handled (its last-handled-configuration annotation) once no handler
    # has anything left to do, retries included: from then on it does not run them for this spec.
    watch_one(
        cp,
        "modelroutes.tuneroute.io",
        namespace,
        "assistant",
        lambda r: "tuneroute.io/last-handled-configuration" in (r["metadata"].get("annotations") or {}),
        what="kopf to be done with the route",
    )
    # The scoped operator sees this namespace only: its counters are this route's runs.
    assert scoped.sample("tuneroute_reconciles_total", kind="ModelRoute", result="error") == 1
    assert scoped.sample("tuneroute_reconciles_total", kind="ModelRoute", result="ok") == 0
    seen = wait_events(cp, namespace, "assistant", lambda evs: any(e["reason"] == "InvalidSpec" for e in evs))
    warnings = [e for e in seen if e["reason"] == "InvalidSpec"]
    assert len(warnings) == 1 and warnings[0].get("count", 1) == 1


def test_api_keys_come_from_the_secret_mounted_into_the_router(control_plane, operator, namespace):
    cp = control_plane
    route = small_route(
        auth={"apiKeySecret": {"name": "router-keys"}, "allowedModels": [{"key": "a", "models": ["auto"]}]}
    )
    apply(cp, namespace, route)
    dep = created(cp, "deployments", namespace, "assistant-router")
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["keys"]["secret"]["secretName"] == "router-keys"
    config = _router_config(cp, namespace, "assistant")
    mount = next(m for m in dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] if m["name"] == "keys")
    assert config.auth.api_keys_path == mount["mountPath"]
    assert config.auth.allowed_models == {"a": ["auto"]}


def test_deleting_the_route_deletes_router_objects(control_plane, operator, namespace):
    cp = control_plane
    apply(cp, namespace, small_route())
    created(cp, "services", namespace, "assistant-router")
    cp.kubectl("-n", namespace, "delete", "mroute", "assistant")
    wait_children_gone(cp, namespace, "deployments,services,configmaps", "tuneroute.io/modelroute=assistant")


def test_a_route_with_hundreds_of_kilobytes_of_examples_is_handled_once(control_plane, operator, namespace):
    """All annotations of an object share 262,144 bytes. kopf kept a copy of the whole spec in
    one (its last-handled configuration): a route with ~300 KB of example prompts (within the
    schema) came up Ready while kopf failed forever to mark it handled. It keeps a digest now."""
    cp = control_plane
    route = small_route()
    prompt = "Summarise the following support ticket and suggest a reply. " * 60  # ~3.6 KB
    route["spec"]["policy"]["examples"] = [
        {"tier": t, "prompts": [f"{i} {prompt}" for i in range(28)]} for t in (1, 2, 3)
    ]  # ~300 KB in all
    assert len(json.dumps(route)) > 280_000
    cp.kubectl("-n", namespace, "apply", "--server-side", "-f", "-", input=json.dumps(route))
    _route_status(
        cp,
        namespace,
        "assistant",
        lambda s: (condition({"status": s}, "Ready") or {}).get("status") == "True",
        "the route to be Ready",
    )
    handled = "tuneroute.io/last-handled-configuration"
    route = watch_one(
        cp,
        "modelroutes.tuneroute.io",
        namespace,
        "assistant",
        lambda r: handled in (r["metadata"].get("annotations") or {}),
        what="kopf to mark the route handled",
    )
    annotations = route["metadata"]["annotations"]
    assert sum(len(k) + len(v) for k, v in annotations.items()) < 4096, annotations.keys()
    # and a later edit is still seen as one
    cp.kubectl(
        "-n", namespace, "patch", "mroute", "assistant", "--type=merge", "-p", '{"spec":{"router":{"replicas":1}}}'
    )
    watch_one(cp, "deployments", namespace, "assistant-router", lambda d: d["spec"]["replicas"] == 1, what="the edit")
