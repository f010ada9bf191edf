"""ModelRoute -> router config and manifests, as pure functions (no cluster)."""

from __future__ import annotations

import copy

import pytest
import yaml
from pydantic import ValidationError

from tuneroute_operator.api.modelroute import ModelRouteSpec
from tuneroute_operator.builders import modelroute as build
from tuneroute_operator.builders.common import Owner
from tuneroute_operator.settings import Settings
from tuneroute_router.config import PoolMember, parse_config
from tuneroute_trainer.contract import describe

VERIFIED = {"type": "ServingVerified", "status": "True", "reason": "Verified"}
SUCCEEDED = {
    "status": {
        "phase": "Succeeded",
        "adapter": {"name": "qwen3-support", "pvc": "tuneroute-adapters", "path": "adapters/qwen3-support"},
        "conditions": [VERIFIED],
    }
}


def _succeeded(gate: dict | None, **status) -> dict:
    body = copy.deepcopy(SUCCEEDED)
    body["status"]["conditions"] = [gate] if gate else []
    body["status"].update(status)
    return body


def _resolve(body, ftjs):
    return build.resolve(Owner.of(body), ModelRouteSpec.model_validate(body["spec"]), ftjs)


def test_adapter_entry_waits_for_its_finetunejob(route_body):
    pending = _resolve(route_body, {"qwen3-support": {"status": {"phase": "Running"}}})
    missing = _resolve(route_body, {"qwen3-support": None})
    assert [r.reason for r in pending] == ["Resolved", "Resolved", "AdapterPending", "Resolved"]
    assert missing[2].reason == "FineTuneJobNotFound"


def test_succeeded_adapter_is_served_by_its_base_backend(route_body):
    entry = _resolve(route_body, {"qwen3-support": SUCCEEDED})[2].model
    assert entry.url == "http://vllm-qwen3-30b-a3b.ml.svc.cluster.local:8000/v1"
    assert (entry.backend_model, entry.adapter.path) == ("qwen3-support", "/adapters/adapters/qwen3-support")


def test_only_verified_adapters_join_the_route_unless_the_entry_allows_unverified(route_body):
    misread = {
        "type": "ServingVerified",
        "status": "False",
        "reason": "TensorSkipped",
        "message": "vLLM would skip tensor base_model.model.model.layers.0.mlp.experts.lora_A.weight",
    }
    refused = _resolve(route_body, {"qwen3-support": _succeeded(misread)})[2]
    assert (refused.model, refused.reason) == (None, "AdapterNotVerified")
    assert "mlp.experts.lora_A.weight" in refused.message
    verifying = _resolve(route_body, {"qwen3-support": _succeeded({"type": "ServingVerified", "status": "Unknown"})})[2]
    assert (verifying.model, verifying.reason) == (None, "AdapterVerifying") and "allowUnverified" in verifying.message
    route_body["spec"]["pool"][2]["backend"]["fineTuneJob"]["allowUnverified"] = True
    allowed = _resolve(route_body, {"qwen3-support": _succeeded(misread)})[2]
    assert allowed.model is not None and allowed.reason == "AdapterUnverified"


def test_the_adapters_routing_profile_goes_into_its_pool_model(route_body):
    profile = {"embedder": "wordllama-l2_supercat-256", "samples": 1, "embeddings": "AAAA", "evalLoss": 1.0}
    model = _resolve(route_body, {"qwen3-support": _succeeded(VERIFIED, routingProfile=profile)})[2].model
    assert model.profile is not None and model.profile.eval_loss == 1.0 and not model.profile.beats_base
    garbled = _resolve(route_body, {"qwen3-support": _succeeded(VERIFIED, routingProfile={"samples": "x"})})[2].model
    assert garbled is not None and garbled.profile is None  # served, never preferred by profile


def test_a_policy_naming_a_pending_entry_is_refused_never_rewritten(route_body):
    """While the adapter trains, the router would refuse a default model it does not have: the
    operator gets the router's refusal (and reports it), not a policy with the name dropped."""
    route_body["spec"]["policy"]["defaultModel"] = "qwen3-support"
    route_body["spec"]["policy"]["fallbackOrder"] = ["qwen3-support", "qwen3-235b-a22b"]
    spec = ModelRouteSpec.model_validate(route_body["spec"])
    with pytest.raises(ValidationError) as e:
        build.router_config(spec, _resolve(route_body, {"qwen3-support": None}))
    assert describe(e.value) == "policy.defaultModel: must name a pool entry"
    ready = build.router_config(spec, _resolve(route_body, {"qwen3-support": SUCCEEDED}))
    assert ready.policy == spec.policy and ready.auth.api_keys_path == build.KEYS_DIR


def test_thresholds_are_kept_as_written_and_refused_while_a_whole_tier_is_pending(route_body):
    route_body["spec"]["pool"] = [e for e in route_body["spec"]["pool"] if e["name"] != "qwen3-30b-a3b"]
    route_body["spec"]["pool"][1]["backend"]["fineTuneJob"]["base"] = "qwen3-4b"
    route_body["spec"]["policy"]["fallbackOrder"] = []
    route_body["spec"]["policy"]["thresholds"] = [0.4, 0.8]
    spec = ModelRouteSpec.model_validate(route_body["spec"])
    with pytest.raises(ValidationError) as e:
        build.router_config(spec, _resolve(route_body, {"qwen3-support": None}))
    assert describe(e.value).startswith("policy.thresholds: needs one cut point fewer")
    ready = build.router_config(spec, _resolve(route_body, {"qwen3-support": SUCCEEDED}))
    assert ready.policy.thresholds == [0.4, 0.8]


def test_a_policy_that_does_not_name_pending_entries_is_served_over_the_ready_ones(route_body):
    spec = ModelRouteSpec.model_validate(route_body["spec"])
    config = build.router_config(spec, _resolve(route_body, {"qwen3-support": None}))
    assert [m.name for m in config.pool] == ["qwen3-4b", "qwen3-30b-a3b", "qwen3-235b-a22b"]
    assert config.policy == spec.policy


def test_examples_for_a_tier_no_entry_has_are_refused_with_the_spec(route_body):
    route_body["spec"]["policy"]["examples"] = [{"tier": 7, "prompts": ["hi"]}]
    with pytest.raises(ValidationError) as e:
        ModelRouteSpec.model_validate(route_body["spec"])
    assert describe(e.value).startswith("policy.examples: each example's tier")


def test_pool_entries_carry_every_shared_field_into_the_router_config(route_body):
    """A PoolEntry is a PoolMember plus its backend: every shared field reaches the router."""
    route_body["spec"]["pool"][0].update(
        model="qwen3-4b-instruct",
        capabilities={"tools": True, "vision": True},
        maxConcurrency=4,
        timeoutSeconds=30,
    )
    spec = ModelRouteSpec.model_validate(route_body["spec"])
    model = _resolve(route_body, {"qwen3-support": SUCCEEDED})[0].model
    entry = spec.pool[0]
    assert {k: getattr(model, k) for k in PoolMember.model_fields} == {
        k: getattr(entry, k) for k in PoolMember.model_fields
    }
    # The router's per-backend limits are the route's to set (they were fixed at 64 and 300 s).
    assert (model.max_concurrency, model.timeout_seconds) == (4, 30)


def test_the_routes_server_limits_reach_the_router_config(route_body):
    """spec.server is the router's own Server model: what the route sets is what the router reads."""
    route_body["spec"]["server"] = {"maxInFlight": 8, "maxJsonElements": 5000, "headerTimeoutSeconds": 2}
    spec = ModelRouteSpec.model_validate(route_body["spec"])
    config = build.router_config(spec, _resolve(route_body, {"qwen3-support": None}))
    rendered = yaml.safe_load(build.configmap(Owner.of(route_body), config)["data"]["router.yaml"])
    assert rendered["server"] | {"maxInFlight": 8, "maxJsonElements": 5000} == rendered["server"]
    assert parse_config(rendered).server == spec.server
    assert (spec.server.max_body_bytes, spec.server.max_header_bytes) == (4 * 1024 * 1024, 32 * 1024)  # defaults


def test_auth_is_rendered_as_the_route_states_it(route_body):
    """The example names its keys Secret and an allow-list; `mode: none` written out is the only
    way to an open router (an omitted auth is refused: tuneroute_testing.manifests)."""
    spec = ModelRouteSpec.model_validate(route_body["spec"])
    config = build.router_config(spec, _resolve(route_body, {"qwen3-support": None}))
    assert config.auth.api_keys_path == build.KEYS_DIR
    assert config.auth.allowed_models == {"support-team": ["auto", "qwen3-support"]}
    pod = build.deployment(Owner.of(route_body), spec, Settings(), "hash")["spec"]["template"]["spec"]
    assert {"name": "keys", "secret": {"secretName": "router-keys"}} in pod["volumes"]
    route_body["spec"]["auth"] = {"mode": "none"}
    spec = ModelRouteSpec.model_validate(route_body["spec"])
    assert build.router_config(spec, _resolve(route_body, {"qwen3-support": None})).auth.api_keys_path is None
    pod = build.deployment(Owner.of(route_body), spec, Settings(), "hash")["spec"]["template"]["spec"]
    assert "keys" not in {v["name"] for v in pod["volumes"]}


def test_backend_api_keys_reach_the_router_as_mounted_files_never_as_values(route_body):
    """An entry's backend.apiKey is mounted into the router pods (a projected volume, one file per
    Secret key) and the config names the file; an adapter entry uses its base entry's key."""
    route_body["spec"]["pool"][0]["backend"]["apiKey"] = {"name": "vllm-keys", "key": "small"}
    route_body["spec"]["pool"][1]["backend"]["apiKey"] = {"name": "vllm-keys", "key": "mid"}
    route_body["spec"]["pool"][3]["backend"]["apiKey"] = {"name": "hosted", "key": "token"}
    spec = ModelRouteSpec.model_validate(route_body["spec"])
    config = build.router_config(spec, _resolve(route_body, {"qwen3-support": SUCCEEDED}))
    paths = {m.name: m.api_key_path for m in config.pool}
    assert paths == {
        "qwen3-4b": "/etc/tuneroute-backend-keys/vllm-keys/small",
        "qwen3-30b-a3b": "/etc/tuneroute-backend-keys/vllm-keys/mid",
        "qwen3-support": "/etc/tuneroute-backend-keys/vllm-keys/mid",  # served by its base
        "qwen3-235b-a22b": "/etc/tuneroute-backend-keys/hosted/token",
    }
    pod = build.deployment(Owner.of(route_body), spec, Settings(), "hash")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "backend-keys")
    assert volume["projected"]["sources"] == [
        {"secret": {"name": "hosted", "items": [{"key": "token", "path": "hosted/token"}]}},
        {
            "secret": {
                "name": "vllm-keys",
                "items": [{"key": "mid", "path": "vllm-keys/mid"}, {"key": "small", "path": "vllm-keys/small"}],
            }
        },
    ]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "backend-keys")
    assert mount == {"name": "backend-keys", "mountPath": "/etc/tuneroute-backend-keys", "readOnly": True}
    del route_body["spec"]["pool"][3]["backend"]["apiKey"]
    spec = ModelRouteSpec.model_validate(route_body["spec"])
    assert build.router_config(spec, _resolve(route_body, {})).pool[-1].api_key_path is None


def test_config_checksum_is_on_the_deployment_not_the_pod_template(route_body):
    owner = Owner.of(route_body)
    spec = ModelRouteSpec.model_validate(route_body["spec"])
    dep = build.deployment(owner, spec, Settings(), "abc123")
    assert dep["metadata"]["annotations"]["tuneroute.io/config-hash"] == "abc123"
    assert "annotations" not in dep["spec"]["template"]["metadata"]  # hot reload, no rollout
    mounts = dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {
        "name": "config",
        "mountPath": "/etc/tuneroute",
        "readOnly": True,
    } in mounts  # no subPath: updates propagate


def test_router_pods_carry_no_token_spread_over_nodes_and_drain_one_at_a_time(route_body):
    owner = Owner.of(route_body)
    spec = ModelRouteSpec.model_validate(route_body["spec"])
    pod = build.deployment(owner, spec, Settings(), "hash")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False  # the router never calls the Kubernetes API
    terms = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert {t["podAffinityTerm"]["topologyKey"] for t in terms} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    selector = build.deployment(owner, spec, Settings(), "hash")["spec"]["selector"]["matchLabels"]
    assert all(t["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector for t in terms)
    pdb = build.disruption_budget(owner)
    assert pdb["kind"] == "PodDisruptionBudget" and pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": selector},
    }
