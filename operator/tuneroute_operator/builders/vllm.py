"""A ModelRoute's `vllm:` pool entry -> vLLM Deployment and Service, serving its adapters.

How adapters reach every replica: `--lora-modules` on the command line, and a rollout when the
set of adapters changes (the pod template carries the set's hash). Every replica, restarted or
scaled out, starts with exactly the adapters of the route's verified FineTuneJobs on this base.
Not vLLM's filesystem resolver plugin: in vLLM 0.32 it builds its LoRARequest without
is_3d_lora_weight (a PEFT expert adapter is then refused) and only accepts an adapter whose
adapter_config.json names the served model as its base (the trainer's names its own copy), and
--max-lora-rank / --max-loras must follow the adapters anyway, which takes a restart. Not the
router's runtime load_lora_adapter either: through a Service it reaches one replica, and a
restarted replica has forgotten it.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from ..api.modelroute import PoolEntry, VllmBackend
from ..settings import Settings
from .common import CONFIG_HASH, Owner, content_hash, labels, metadata

PORT = 8000
ADAPTERS_ROOT = "/adapters"
MODELS_ROOT = "/models"
CACHE_DIR = "/cache"
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's --max-lora-rank accepts
COMPONENT = "vllm"


@dataclass(frozen=True)
class ServedAdapter:
    """A verified adapter on a claim, as the vLLM pods mount it."""

    name: str
    pvc: str
    path: str  # inside the claim
    rank: int
    experts: bool  # PEFT target_parameters on fused 3D expert weights

    @property
    def mount_path(self) -> str:
        return posixpath.join(ADAPTERS_ROOT, self.pvc, self.path)


def name(owner: Owner, entry: PoolEntry) -> str:
    """A DNS label for the entry's Deployment and Service: <route>-<entry>, hashed when too long."""
    slug = re.sub(r"[^a-z0-9-]+", "-", entry.name.lower()).strip("-") or "model"
    full = f"{owner.name}-{slug}"
    if len(full) <= 55 and full == f"{owner.name}-{entry.name}":
        return full
    digest = hashlib.sha256(entry.name.encode()).hexdigest()[:6]
    return f"{full[:48].rstrip('-')}-{digest}"


def url(owner: Owner, entry: PoolEntry) -> str:
    return f"http://{name(owner, entry)}.{owner.namespace}.svc.cluster.local:{PORT}/v1"


def served_name(entry: PoolEntry) -> str:
    return entry.model or entry.name


def _model_arg(v: VllmBackend) -> list[str]:
    if v.model.id:
        return ["--model", v.model.id, "--revision", v.model.revision]
    return ["--model", posixpath.join(MODELS_ROOT, v.model.pvc or "", v.model.path or "")]


def args(entry: PoolEntry, v: VllmBackend, adapters: list[ServedAdapter]) -> list[str]:
    out = [*_model_arg(v), "--served-model-name", served_name(entry), "--host", "0.0.0.0", "--port", str(PORT)]
    out += ["--dtype", v.dtype]
    if v.gpus > 1:
        out += ["--tensor-parallel-size", str(v.gpus)]
    if v.max_model_len:
        out += ["--max-model-len", str(v.max_model_len)]
    if adapters:
        # LoRA only when there is an adapter: enabling it costs memory and may change base outputs
        rank = max(a.rank for a in adapters)
        out += ["--enable-lora", "--max-lora-rank", str(next((r for r in LORA_RANKS if r >= rank), rank))]
        out += ["--max-loras", str(len(adapters))]
        if any(a.experts for a in adapters):
            out.append("--enable-mixed-moe-lora-format")  # PEFT's fused 3D expert layout
        if v.lora_target_modules:
            out += ["--lora-target-modules", *v.lora_target_modules]
        out.append("--lora-modules")
        for a in sorted(adapters, key=lambda a: a.name):
            module: dict[str, Any] = {"name": a.name, "path": a.mount_path, "base_model_name": served_name(entry)}
            if a.experts:
                module["is_3d_lora_weight"] = True
            out.append(json.dumps(module, separators=(",", ":"), sort_keys=True))
    return out + list(v.extra_args)


def _volumes(v: VllmBackend, adapters: list[ServedAdapter]) -> tuple[list[dict], list[dict]]:
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(v.resources.shared_memory)}},
    ]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "dshm", "mountPath": "/dev/shm"}]
    if v.model_cache:
        volumes.append({"name": "cache", "persistentVolumeClaim": {"claimName": v.model_cache}})
        mounts.append({"name": "cache", "mountPath": CACHE_DIR})
    claims = {(MODELS_ROOT, v.model.pvc)} if v.model.pvc else set()
    claims |= {(ADAPTERS_ROOT, a.pvc) for a in adapters}
    for i, (root, claim) in enumerate(sorted(claims)):
        volumes.append({"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": f"pvc-{i}", "mountPath": posixpath.join(root, claim), "readOnly": True})
    return volumes, mounts


def deployment(
    owner: Owner, entry: PoolEntry, v: VllmBackend, adapters: list[ServedAdapter], settings: Settings
) -> dict[str, Any]:
    n = name(owner, entry)
    selector = {"app.kubernetes.io/name": f"tuneroute-{COMPONENT}", "app.kubernetes.io/instance": n}
    volumes, mounts = _volumes(v, adapters)
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": CACHE_DIR if v.model_cache else "/tmp/hf"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
    ]
    if v.hf_token:
        env.append(
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": v.hf_token.name, "key": v.hf_token.key}}}
        )
    if entry.backend.api_key:  # vLLM's --api-key, kept out of the command line (and so out of `kubectl get`)
        key = entry.backend.api_key
        env.append({"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": key.name, "key": key.key}}})
    amounts: dict[str, str] = {}
    if v.gpus:
        amounts[v.resources.gpu_resource] = str(v.gpus)
    if v.resources.cpu:
        amounts["cpu"] = str(v.resources.cpu)
    if v.resources.memory:
        amounts["memory"] = str(v.resources.memory)
    health = {"httpGet": {"path": "/health", "port": "http"}}
    container = {
        "name": "vllm",
        "image": v.image or settings.vllm_image,
        "imagePullPolicy": settings.image_pull_policy,
        # not `vllm serve`: the module works in every vLLM build (the CPU wheel's CLI does not)
        "command": ["python3", "-m", "vllm.entrypoints.openai.api_server"],
        "args": args(entry, v, adapters),
        "env": env,
        "ports": [{"name": "http", "containerPort": PORT}],
        # loading a large model takes minutes: the startup probe allows 20 before liveness counts
        "startupProbe": {**health, "periodSeconds": 10, "failureThreshold": 120},
        "readinessProbe": {**health, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**health, "periodSeconds": 30, "failureThreshold": 4},
        "resources": {"requests": amounts, "limits": dict(amounts)} if amounts else {},
        "volumeMounts": mounts,
        # the vLLM image runs as root and writes caches: no read-only root or fixed uid here
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    pod: dict[str, Any] = {
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 60,
    }
    if v.node_selector:
        pod["nodeSelector"] = dict(v.node_selector)
    if v.tolerations:
        pod["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in v.tolerations]
    adapter_set = content_hash(sorted(a.name for a in adapters))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, n, COMPONENT),
        "spec": {
            "replicas": v.replicas,
            "selector": {"matchLabels": selector},
            # a new adapter set starts new pods before old ones stop (spare GPUs permitting): no
            # capacity drops; without a spare GPU the new pod waits and the old one keeps serving
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": {**labels(owner, COMPONENT), **selector},
                    "annotations": {CONFIG_HASH: adapter_set},
                },
                "spec": pod,
            },
        },
    }


def service(owner: Owner, entry: PoolEntry) -> dict[str, Any]:
    n = name(owner, entry)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, n, COMPONENT),
        "spec": {
            "selector": {"app.kubernetes.io/name": f"tuneroute-{COMPONENT}", "app.kubernetes.io/instance": n},
            "ports": [{"name": "http", "port": PORT, "targetPort": "http"}],
        },
    }


def available(deployment_obj: dict[str, Any] | None) -> tuple[bool, str, str]:
    """(ready, reason, message) of a vLLM Deployment: ready once a replica answers /health."""
    st = (deployment_obj or {}).get("status") or {}
    want = ((deployment_obj or {}).get("spec") or {}).get("replicas", 1)
    ready = int(st.get("readyReplicas") or 0)
    if want == 0:
        return False, "VllmScaledToZero", "replicas is 0"
    if ready == 0:
        return False, "VllmStarting", "waiting for a vLLM replica to answer /health"
    return True, "VllmReady", f"{ready}/{want} vLLM replicas ready"
