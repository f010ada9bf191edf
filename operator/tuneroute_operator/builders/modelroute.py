"""ModelRoute -> router config (the router's own model), ConfigMap, Deployment and Service."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

import yaml

from tuneroute_router.config import AdapterRef, PoolModel, RouterConfig

from ..api.modelroute import ModelRouteSpec, PoolEntry
from ..settings import Settings
from .common import CONFIG_HASH, RESTRICTED_CONTAINER, RESTRICTED_POD, Owner, content_hash, labels, metadata

CONFIG_DIR = "/etc/tuneroute"
CONFIG_FILE = "router.yaml"
KEYS_DIR = "/etc/tuneroute-keys"
PORT = 8080


def router_name(owner: Owner) -> str:
    return f"{owner.name}-router"


def endpoint(owner: Owner) -> str:
    return f"http://{router_name(owner)}.{owner.namespace}.svc.cluster.local/v1"


@dataclass(frozen=True)
class Resolved:
    """A pool entry and where it is served, or why it is not (yet)."""

    entry: PoolEntry
    model: PoolModel | None
    reason: str
    message: str = ""


def _direct_url(owner: Owner, entry: PoolEntry) -> str | None:
    b = entry.backend
    if b.url:
        return b.url
    if b.service:
        return f"http://{b.service.name}.{owner.namespace}.svc.cluster.local:{b.service.port}{b.service.path}"
    return None


def _pool_model(entry: PoolEntry, url: str, model: str | None, adapter: AdapterRef | None = None) -> PoolModel:
    return PoolModel(
        name=entry.name,
        url=url,
        model=model,
        tier=entry.tier,
        pricing=entry.pricing,
        context_window=entry.context_window,
        capabilities=entry.capabilities,
        adapter=adapter,
    )


def resolve(owner: Owner, spec: ModelRouteSpec, finetunejobs: dict[str, dict[str, Any] | None]) -> list[Resolved]:
    """Each pool entry's backend; a fineTuneJob entry is ready once its job has succeeded.

    `finetunejobs` maps the referenced FineTuneJob names to their bodies (None: not found).
    """
    by_name = {e.name: e for e in spec.pool}
    out = []
    for entry in spec.pool:
        ref = entry.backend.fine_tune_job
        if ref is None:
            out.append(Resolved(entry, _pool_model(entry, _direct_url(owner, entry), entry.model), "Resolved"))
            continue
        ftj = finetunejobs.get(ref.name)
        status = (ftj or {}).get("status") or {}
        adapter = status.get("adapter")
        if ftj is None:
            out.append(Resolved(entry, None, "FineTuneJobNotFound", f"FineTuneJob {ref.name} does not exist"))
        elif status.get("phase") != "Succeeded" or not adapter:
            phase = status.get("phase") or "Pending"
            out.append(Resolved(entry, None, "AdapterPending", f"FineTuneJob {ref.name} is {phase}"))
        else:
            base = by_name[ref.base]
            path = posixpath.join(ref.mount_path, adapter["path"])
            model = entry.model or adapter["name"]
            out.append(
                Resolved(
                    entry,
                    _pool_model(entry, _direct_url(owner, base), model, AdapterRef(name=model, path=path)),
                    "AdapterReady",
                )
            )
    return out


def router_config(spec: ModelRouteSpec, resolved: list[Resolved], keys: bool) -> RouterConfig:
    """The router's config over the ready entries.

    Policy references to entries that are only pending (an adapter still training) are
    dropped until they are ready; references to names or tiers absent from the spec are
    kept, so that the router's own validation refuses them.
    """
    pool = [r.model for r in resolved if r.model is not None]
    pending = {r.entry.name for r in resolved if r.model is None}
    ready_tiers = {m.tier for m in pool}
    pending_tiers = {r.entry.tier for r in resolved if r.model is None} - ready_tiers
    p = spec.policy
    thresholds = p.thresholds
    if pending_tiers:
        thresholds = None  # cut points are per distinct tier: they no longer fit while a tier is missing
    policy = p.model_copy(
        update={
            "default_model": None if p.default_model in pending else p.default_model,
            "fallback_order": [n for n in p.fallback_order if n not in pending],
            "examples": [e for e in p.examples if e.tier not in pending_tiers],
            "thresholds": thresholds,
        }
    )
    # model_validate (not the constructor) so that the router's cross-field checks run.
    return RouterConfig.model_validate(
        {
            "virtualModel": spec.model,
            "pool": [m.model_dump(by_alias=True) for m in pool],
            "policy": policy.model_dump(by_alias=True),
            "dispatch": spec.dispatch.model_dump(by_alias=True),
            "auth": {"apiKeysPath": KEYS_DIR if keys else None},
        }
    )


def configmap(owner: Owner, config: RouterConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, router_name(owner), "router", {CONFIG_HASH: content_hash(data)}),
        "data": {CONFIG_FILE: yaml.safe_dump(data, sort_keys=False)},
    }


def deployment(owner: Owner, spec: ModelRouteSpec, settings: Settings, config_hash: str) -> dict[str, Any]:
    name = router_name(owner)
    selector = {"app.kubernetes.io/name": "tuneroute-router", "app.kubernetes.io/instance": owner.name}
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": name}}, {"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [
        # A directory mount, not subPath: the kubelet swaps the file in place and the router hot-reloads it.
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if spec.api_key_secret:
        volumes.append({"name": "keys", "secret": {"secretName": spec.api_key_secret.name}})
        mounts.append({"name": "keys", "mountPath": KEYS_DIR, "readOnly": True})
    res = spec.router.resources
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "failureThreshold": 3}
    container = {
        "name": "router",
        "image": spec.router.image or settings.router_image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": ["--config", posixpath.join(CONFIG_DIR, CONFIG_FILE), "--port", str(PORT)],
        "ports": [{"name": "http", "containerPort": PORT}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": probe,
        "resources": {"requests": {"cpu": res.cpu, "memory": res.memory}, "limits": {"memory": res.memory}},
        "volumeMounts": mounts,
        "securityContext": RESTRICTED_CONTAINER,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        # The checksum sits on the Deployment, not the pod template: config changes are
        # hot-reloaded by the router, so they need no rollout.
        "metadata": metadata(owner, name, "router", {CONFIG_HASH: config_hash}),
        "spec": {
            "replicas": spec.router.replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels(owner, "router")},
                "spec": {"securityContext": RESTRICTED_POD, "containers": [container], "volumes": volumes},
            },
        },
    }


def service(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, router_name(owner), "router"),
        "spec": {
            "selector": {"app.kubernetes.io/name": "tuneroute-router", "app.kubernetes.io/instance": owner.name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
