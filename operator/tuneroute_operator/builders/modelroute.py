"""ModelRoute -> router config (the router's own model), ConfigMap, Deployment and Service."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

import yaml

from tuneroute_router.config import AdapterRef, Auth, PoolMember, PoolModel, RouterConfig

from ..api.modelroute import ModelRouteSpec, PoolEntry
from ..settings import Settings
from .common import CONFIG_DIR, CONFIG_HASH, RESTRICTED_CONTAINER, RESTRICTED_POD, Owner, content_hash, labels, metadata

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


def _direct_url(owner: Owner, entry: PoolEntry) -> str:
    """The URL of an entry with a url or service backend (the spec's rules name only such as bases)."""
    b = entry.backend
    if b.service:
        return f"http://{b.service.name}.{owner.namespace}.svc.cluster.local:{b.service.port}{b.service.path}"
    return b.url or ""


def _pool_model(entry: PoolEntry, url: str, model: str | None, adapter: AdapterRef | None = None) -> PoolModel:
    shared = {name: getattr(entry, name) for name in PoolMember.model_fields}
    return PoolModel(**{**shared, "url": url, "model": model, "adapter": adapter})


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
    """The router's config over the ready entries, with the route's policy as the user wrote it.

    Raises pydantic's ValidationError where the router would refuse that config. The spec itself
    passed the same rules over its whole pool; what fails here is a policy that counts on an
    entry that is not ready: an adapter still training is left out of the pool, so a policy
    that names it (defaultModel, fallbackOrder), gives examples for a tier only it has, or sets
    thresholds while it is the only entry of its tier does not fit until the adapter is ready.
    """
    return RouterConfig(
        virtual_model=spec.model,
        pool=[r.model for r in resolved if r.model is not None],
        policy=spec.policy,
        dispatch=spec.dispatch,
        auth=Auth(api_keys_path=KEYS_DIR if keys else None),
    )


def configmap(owner: Owner, config: RouterConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, router_name(owner), "router", {CONFIG_HASH: content_hash(data)}),
        "data": {CONFIG_FILE: yaml.safe_dump(data, sort_keys=False)},
    }


def _selector(owner: Owner) -> dict[str, str]:
    return {"app.kubernetes.io/name": "tuneroute-router", "app.kubernetes.io/instance": owner.name}


def deployment(owner: Owner, spec: ModelRouteSpec, settings: Settings, config_hash: str) -> dict[str, Any]:
    name = router_name(owner)
    selector = _selector(owner)
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
                "spec": {
                    # The router never calls the Kubernetes API: no token in its pods to steal.
                    "automountServiceAccountToken": False,
                    "securityContext": RESTRICTED_POD,
                    # Replicas on different nodes (and zones) where the cluster allows: one node
                    # going down must not take the route with it.
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "labelSelector": {"matchLabels": selector},
                                        "topologyKey": "kubernetes.io/hostname",
                                    },
                                },
                                {
                                    "weight": 50,
                                    "podAffinityTerm": {
                                        "labelSelector": {"matchLabels": selector},
                                        "topologyKey": "topology.kubernetes.io/zone",
                                    },
                                },
                            ]
                        }
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def disruption_budget(owner: Owner) -> dict[str, Any]:
    """Node drains take the router's pods down one at a time (with one replica, the drain is
    not blocked: maxUnavailable, not minAvailable)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(owner, router_name(owner), "router"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(owner)}},
    }


def service(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, router_name(owner), "router"),
        "spec": {
            "selector": _selector(owner),
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
