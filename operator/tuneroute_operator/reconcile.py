"""Reconcilers: read the world, call the pure builders, write children and status.

kopf handlers (handlers.py) call these; they take a Kube, so tests can run them directly.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from . import API_VERSION
from .api.finetunejob import FineTuneJobSpec
from .api.modelroute import ModelRouteSpec
from .builders import finetunejob as ftj_build
from .builders import modelroute as route_build
from .builders.common import CONFIG_HASH, Owner
from .kube import Kube
from .settings import Settings
from .status import conditions as cond
from .status import finetunejob as ftj_status
from .status import modelroute as route_status

log = logging.getLogger(__name__)
# (object body, type "Normal"/"Warning", reason, message): posts a Kubernetes Event.
Emit = Callable[[dict[str, Any], str, str, str], None]


# kopf runs handlers for different watched kinds concurrently (a Job event and a pod event
# of the same FineTuneJob, say). One lock per object makes each status computation start from
# the status the previous one wrote, so a transition is written, and announced, once.
_locks: defaultdict[tuple[str, str, str], threading.Lock] = defaultdict(threading.Lock)


def _lock(kind: str, namespace: str, name: str) -> threading.Lock:
    return _locks[(kind, namespace, name)]


class InvalidSpec(Exception):
    """A spec the API server accepted but the operator cannot act on; retrying will not help."""


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors())


def _emit_transitions(emit: Emit, body: dict, before: list[dict] | None, after: list[dict]) -> None:
    """One Event per new reason among the conditions that turned True (and Ready, either way)."""
    reasons: set[str] = set()
    for c in cond.transitions(before, after):
        if (c["status"] != "True" and c["type"] != "Ready") or c["reason"] in reasons:
            continue
        reasons.add(c["reason"])
        warning = c["type"] in ("Failed", "Degraded") or c["reason"] == "InvalidSpec"
        emit(body, "Warning" if warning else "Normal", c["reason"], c["message"] or f"{c['type']}={c['status']}")


def _fail_invalid(kube: Kube, emit: Emit, body: dict, message: str, types: tuple[str, ...]) -> None:
    meta = body["metadata"]
    before = (body.get("status") or {}).get("conditions")
    wanted = [cond.Cond(t, t in ("Failed", "Degraded"), "InvalidSpec", message) for t in types]
    conditions = cond.merge(before, wanted, now(), meta.get("generation", 1))
    status: dict[str, Any] = {"conditions": conditions, "observedGeneration": meta.get("generation")}
    if body["kind"] == "FineTuneJob":
        status |= {"phase": "Failed", "message": message}
    kube.patch_status(API_VERSION, body["kind"], meta["namespace"], meta["name"], status)
    _emit_transitions(emit, body, before, conditions)


# FineTuneJob ------------------------------------------------------------------------------


def finetunejob(kube: Kube, settings: Settings, body: dict[str, Any], emit: Emit) -> None:
    """Create or update the FineTuneJob's children, then refresh its status."""
    owner = Owner.of(body)
    try:
        spec = FineTuneJobSpec.model_validate(body["spec"])
        children = ftj_build.children(owner, spec, settings)
    except ValidationError as e:
        _fail_invalid(kube, emit, body, f"invalid spec: {describe(e)}", ftj_status.TYPES)
        raise InvalidSpec(describe(e)) from None
    for child in children:
        kube.apply(child)
    finetunejob_status(kube, owner.namespace, owner.name, emit)


def finetunejob_status(kube: Kube, namespace: str, name: str, emit: Emit) -> None:
    """Recompute a FineTuneJob's status from its Job (and, when it is not running, the Job's pods)."""
    with _lock("FineTuneJob", namespace, name):
        body = kube.get(API_VERSION, "FineTuneJob", namespace, name)
        if body is not None and body["metadata"].get("deletionTimestamp") is None:
            _finetunejob_status(kube, body, emit)
    if body is None:
        _locks.pop(("FineTuneJob", namespace, name), None)  # gone: forget its lock


def _finetunejob_status(kube: Kube, body: dict[str, Any], emit: Emit) -> None:
    meta, old = body["metadata"], body.get("status") or {}
    ns, name = meta["namespace"], meta["name"]
    job = kube.get("batch/v1", "Job", ns, name)
    jst = (job or {}).get("status") or {}
    # Pods explain a failure (termination message) or a wait (the scheduler's message).
    pods = kube.list("v1", "Pod", ns, f"job-name={name}") if job and not jst.get("ready") else []
    suspend = bool((body.get("spec") or {}).get("suspend"))
    phase, wanted, message = ftj_status.phase_and_conditions(job, pods, suspend)
    conditions = cond.merge(old.get("conditions"), wanted, now(), meta.get("generation", 1))
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "observedGeneration": meta.get("generation"),
        "jobName": name if job else None,
        "attempts": ftj_status.attempts(job),
        "startTime": jst.get("startTime"),
        "completionTime": jst.get("completionTime"),
        "message": message,
    }
    if phase == "Succeeded":
        spec = FineTuneJobSpec.model_validate(body["spec"])
        owner = Owner.of(body)
        path = ftj_build.output_path(owner, spec)
        status["adapter"] = {
            "name": ftj_build.adapter_name(owner, spec),
            "pvc": spec.output.pvc,
            "path": path,
            "uri": f"pvc://{spec.output.pvc}/{path}",
        }
    status = {k: v for k, v in status.items() if v is not None}
    if all(old.get(k) == v for k, v in status.items()):
        return  # nothing changed: no write, so no event storm from our own patches
    kube.patch_status(API_VERSION, "FineTuneJob", ns, name, status)
    _emit_transitions(emit, body, old.get("conditions"), conditions)


# ModelRoute -------------------------------------------------------------------------------


def _referenced_finetunejobs(kube: Kube, namespace: str, spec: ModelRouteSpec) -> dict[str, dict | None]:
    names = {e.backend.fine_tune_job.name for e in spec.pool if e.backend.fine_tune_job}
    return {n: kube.get(API_VERSION, "FineTuneJob", namespace, n) for n in names}


def modelroute(kube: Kube, settings: Settings, namespace: str, name: str, emit: Emit) -> None:
    """Render the router config over the ready pool entries; apply ConfigMap, Deployment, Service; refresh status."""
    with _lock("ModelRoute", namespace, name):
        body = kube.get(API_VERSION, "ModelRoute", namespace, name)
        if body is not None and body["metadata"].get("deletionTimestamp") is None:
            _modelroute(kube, settings, body, emit)
    if body is None:
        _locks.pop(("ModelRoute", namespace, name), None)


def _modelroute(kube: Kube, settings: Settings, body: dict[str, Any], emit: Emit) -> None:
    owner = Owner.of(body)
    old = body.get("status") or {}
    try:
        spec = ModelRouteSpec.model_validate(body["spec"])
        resolved = route_build.resolve(owner, spec, _referenced_finetunejobs(kube, owner.namespace, spec))
        ready = [r for r in resolved if r.model is not None]
        config = route_build.router_config(spec, resolved, keys=spec.api_key_secret is not None) if ready else None
    except ValidationError as e:
        _fail_invalid(kube, emit, body, f"invalid spec: {describe(e)}", ("Ready", "Degraded"))
        raise InvalidSpec(describe(e)) from None
    config_hash = old.get("configHash")
    if config is not None:
        # With no ready backend the old ConfigMap stays: the router keeps its last good config.
        cm = kube.apply(route_build.configmap(owner, config))
        config_hash = cm["metadata"]["annotations"][CONFIG_HASH]
    deployment = None
    if config_hash:
        deployment = kube.apply(route_build.deployment(owner, spec, settings, config_hash))
        kube.apply(route_build.service(owner))
    _modelroute_status(kube, body, spec.router.replicas, resolved, deployment, config_hash, emit)


def _modelroute_status(
    kube: Kube, body: dict, replicas: int, resolved: list, deployment: dict | None, config_hash: str | None, emit: Emit
) -> None:
    meta, old = body["metadata"], body.get("status") or {}
    owner = Owner.of(body)
    wanted = route_status.conditions(resolved, deployment, replicas)
    conditions = cond.merge(old.get("conditions"), wanted, now(), meta.get("generation", 1))
    ready_n = sum(r.model is not None for r in resolved)
    status = {
        "conditions": conditions,
        "observedGeneration": meta.get("generation"),
        "readyBackends": ready_n,
        "totalBackends": len(resolved),
        "backends": f"{ready_n}/{len(resolved)}",
        "backendStatus": route_status.backend_status(resolved),
        "endpoint": route_build.endpoint(owner),
        "configHash": config_hash,
    }
    status = {k: v for k, v in status.items() if v is not None}
    if all(old.get(k) == v for k, v in status.items()):
        return
    kube.patch_status(API_VERSION, "ModelRoute", meta["namespace"], meta["name"], status)
    _emit_transitions(emit, body, old.get("conditions"), conditions)


def routes_waiting_on(kube: Kube, finetunejob: dict[str, Any]) -> list[dict[str, Any]]:
    """ModelRoutes whose view of this FineTuneJob's adapter is out of date."""
    meta = finetunejob["metadata"]
    adapter_ready = (finetunejob.get("status") or {}).get("phase") == "Succeeded"
    out = []
    for route in kube.list(API_VERSION, "ModelRoute", meta["namespace"]):
        for entry in (route.get("spec") or {}).get("pool") or []:
            if ((entry.get("backend") or {}).get("fineTuneJob") or {}).get("name") != meta["name"]:
                continue
            seen = {b["name"]: b.get("ready") for b in (route.get("status") or {}).get("backendStatus") or []}
            if seen.get(entry["name"]) != adapter_ready:
                out.append(route)
                break
    return out
