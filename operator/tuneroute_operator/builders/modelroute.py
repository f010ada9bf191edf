"""ModelRoute -> router config (the router's own model), ConfigMap, Deployment and Service."""

from __future__ import annotations

import dataclasses
import posixpath
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from tuneroute_router.config import AdapterRef, Auth, PoolMember, PoolModel, RouterConfig
from tuneroute_trainer.config import RoutingProfile

from ..api.common import SecretKeyRef
from ..api.finetunejob import FineTuneJobSpec
from ..api.modelroute import ModelRouteSpec, PoolEntry
from ..settings import Settings
from . import vllm
from .common import CONFIG_DIR, CONFIG_HASH, RESTRICTED_CONTAINER, RESTRICTED_POD, Owner, content_hash, labels, metadata

CONFIG_FILE = "router.yaml"
KEYS_DIR = "/etc/tuneroute-keys"
BACKEND_KEYS_DIR = "/etc/tuneroute-backend-keys"  # <secret>/<key>: each backend's API key
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
    served: vllm.ServedAdapter | None = None  # an adapter a `vllm:` base serves with --lora-modules
    available: bool | None = None  # a `vllm:` backend's readiness (None: not ours to know)

    @property
    def ready(self) -> bool:
        return self.model is not None and self.available is not False


def _direct_url(owner: Owner, entry: PoolEntry) -> str:
    """The URL of an entry with a url, service or vllm backend (the spec's rules name only such as bases)."""
    b = entry.backend
    if b.vllm:
        return vllm.url(owner, entry)
    if b.service:
        return f"http://{b.service.name}.{owner.namespace}.svc.cluster.local:{b.service.port}{b.service.path}"
    return b.url or ""


def backend_key_path(key: SecretKeyRef | None) -> str | None:
    """Where the router pods find a backend's API key (backend_keys_volume mounts it there)."""
    return None if key is None else posixpath.join(BACKEND_KEYS_DIR, key.name, key.key)


def _pool_model(
    entry: PoolEntry,
    url: str,
    model: str | None,
    adapter: AdapterRef | None = None,
    profile: RoutingProfile | None = None,
    key: SecretKeyRef | None = None,
) -> PoolModel:
    shared = {name: getattr(entry, name) for name in PoolMember.model_fields}
    fields = {"url": url, "model": model, "adapter": adapter, "profile": profile, "api_key_path": backend_key_path(key)}
    return PoolModel(**{**shared, **fields})


def adapter_state(name: str, ftj: dict[str, Any] | None, allow_unverified: bool) -> tuple[bool, str, str]:
    """(ready, reason, message) of a pool entry serving FineTuneJob `name`'s adapter: it joins the
    route once training succeeded and the parity gate verified it (or the entry allows unverified)."""
    if ftj is None:
        return False, "FineTuneJobNotFound", f"FineTuneJob {name} does not exist"
    status = ftj.get("status") or {}
    if status.get("phase") != "Succeeded" or not status.get("adapter"):
        return False, "AdapterPending", f"FineTuneJob {name} is {status.get('phase') or 'Pending'}"
    gate = next((c for c in status.get("conditions") or [] if c.get("type") == "ServingVerified"), None) or {}
    if gate.get("status") == "True":
        return True, "AdapterVerified", ""
    if allow_unverified:
        return True, "AdapterUnverified", f"served without verification (ServingVerified: {gate.get('reason')})"
    if gate.get("status") == "False":
        return False, "AdapterNotVerified", f"FineTuneJob {name}: {gate.get('message') or gate.get('reason')}"
    why = gate.get("reason") or "Verifying"
    return (
        False,
        "AdapterVerifying",
        f"FineTuneJob {name}: {why}; set allowUnverified to serve it before it is verified",
    )


def _profile(status: dict[str, Any]) -> RoutingProfile | None:
    try:
        return RoutingProfile.model_validate(status["routingProfile"]) if status.get("routingProfile") else None
    except ValidationError:
        return None  # a profile the router could not read: the adapter is served, never preferred


def resolve(owner: Owner, spec: ModelRouteSpec, finetunejobs: dict[str, dict[str, Any] | None]) -> list[Resolved]:
    """Each pool entry's backend; a fineTuneJob entry is ready once its job has succeeded and its
    adapter passed the parity gate (adapter_state).

    `finetunejobs` maps the referenced FineTuneJob names to their bodies (None: not found).
    """
    by_name = {e.name: e for e in spec.pool}
    out = []
    for entry in spec.pool:
        ref = entry.backend.fine_tune_job
        if ref is None:
            reason = "VllmStarting" if entry.backend.vllm else "Resolved"
            pool_model = _pool_model(entry, _direct_url(owner, entry), entry.model, key=entry.backend.api_key)
            out.append(Resolved(entry, pool_model, reason))
            continue
        ftj = finetunejobs.get(ref.name)
        ready, reason, message = adapter_state(ref.name, ftj, ref.allow_unverified)
        if not ready:
            out.append(Resolved(entry, None, reason, message))
            continue
        status = (ftj or {}).get("status") or {}
        adapter = status["adapter"]
        base = by_name[ref.base]
        url = _direct_url(owner, base)
        if base.backend.vllm:  # every replica serves it from the start (--lora-modules): no runtime load
            lora = FineTuneJobSpec.model_validate((ftj or {})["spec"]).lora
            served = vllm.ServedAdapter(adapter["name"], adapter["pvc"], adapter["path"], lora.rank, lora.experts)
            pool_model = _pool_model(entry, url, adapter["name"], None, _profile(status), base.backend.api_key)
            out.append(Resolved(entry, pool_model, reason, message, served=served))
            continue
        path = posixpath.join(ref.mount_path, adapter["path"])
        model = entry.model or adapter["name"]
        pool_model = _pool_model(
            entry, url, model, AdapterRef(name=model, path=path), _profile(status), base.backend.api_key
        )
        out.append(Resolved(entry, pool_model, reason, message))
    return out


def vllm_backends(
    owner: Owner, spec: ModelRouteSpec, resolved: list[Resolved], settings: Settings
) -> dict[str, list[dict[str, Any]]]:
    """Deployment and Service of every `vllm:` entry, each serving the ready adapters based on it."""
    out = {}
    for r in resolved:
        v = r.entry.backend.vllm
        if v is None:
            continue
        adapters = [
            a.served
            for a in resolved
            if a.served is not None
            and a.entry.backend.fine_tune_job is not None
            and a.entry.backend.fine_tune_job.base == r.entry.name
        ]
        out[r.entry.name] = [
            vllm.deployment(owner, r.entry, v, adapters, settings),
            vllm.service(owner, r.entry),
        ]
    return out


def with_availability(resolved: list[Resolved], deployments: dict[str, dict[str, Any] | None]) -> list[Resolved]:
    """The `vllm:` entries' (and their adapters') readiness from their Deployments' status."""
    state = {name: vllm.available(d) for name, d in deployments.items()}
    out = []
    for r in resolved:
        key = r.entry.name if r.entry.backend.vllm else None
        if r.served is not None and r.entry.backend.fine_tune_job is not None:
            key = r.entry.backend.fine_tune_job.base
        if key is None or key not in state:
            out.append(r)
            continue
        ok, reason, message = state[key]
        if r.entry.backend.vllm:
            out.append(dataclasses.replace(r, available=ok, reason=reason, message=message))
        else:
            out.append(dataclasses.replace(r, available=ok, message=message if not ok else r.message))
    return out


def router_auth(spec: ModelRouteSpec) -> Auth:
    """The route's auth as the router reads it: the Secret's mount, and its keys' allow-lists."""
    auth = spec.auth
    if auth is None or auth.api_key_secret is None:
        return Auth()  # mode none, as the spec says in so many words (ModelRouteSpec refuses it otherwise)
    return Auth(api_keys_path=KEYS_DIR, allowed_models={a.key: a.models for a in auth.allowed_models})


def router_config(spec: ModelRouteSpec, resolved: list[Resolved]) -> RouterConfig:
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
        server=spec.server,
        auth=router_auth(spec),
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


def backend_keys_volume(spec: ModelRouteSpec) -> dict[str, Any] | None:
    """One projected volume with every backend's API key at <secret>/<key> (backend_key_path)."""
    by_secret: dict[str, set[str]] = {}
    for e in spec.pool:
        if e.backend.api_key:
            by_secret.setdefault(e.backend.api_key.name, set()).add(e.backend.api_key.key)
    if not by_secret:
        return None
    sources = [
        {"secret": {"name": name, "items": [{"key": k, "path": f"{name}/{k}"} for k in sorted(keys)]}}
        for name, keys in sorted(by_secret.items())
    ]
    return {"name": "backend-keys", "projected": {"sources": sources}}


def deployment(owner: Owner, spec: ModelRouteSpec, settings: Settings, config_hash: str) -> dict[str, Any]:
    name = router_name(owner)
    selector = _selector(owner)
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": name}}, {"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [
        # A directory mount, not subPath: the kubelet swaps the file in place and the router hot-reloads it.
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if spec.auth and spec.auth.api_key_secret:
        volumes.append({"name": "keys", "secret": {"secretName": spec.auth.api_key_secret.name}})
        mounts.append({"name": "keys", "mountPath": KEYS_DIR, "readOnly": True})
    backend_keys = backend_keys_volume(spec)
    if backend_keys is not None:
        volumes.append(backend_keys)
        mounts.append({"name": "backend-keys", "mountPath": BACKEND_KEYS_DIR, "readOnly": True})
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
